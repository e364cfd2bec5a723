"""Options and helpers shared by several subcommands (not a command module)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from artifactkit.budget import CODE_RULES, DEFAULT_BUDGET
from artifactkit.commands._framework import CliState, note
from artifactkit.plan.classify import UserRules
from artifactkit.plan.policy import DEFAULT_POLICY, NAMED_POLICIES, Policy, resolve_policy

EXISTING_FILE = click.Path(exists=True, dir_okay=False, readable=True)


def debug_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--debug` on every subcommand too (not only before it)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            state = ctx.find_object(CliState)
            if state is not None:
                state.debug = True
        return value

    return click.option("--debug", is_flag=True, expose_value=False, callback=callback, is_eager=True,
                        help="Show full tracebacks on errors.")(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout and nothing else.")(func)


def rules_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--rules", "rules_path", type=EXISTING_FILE, default=None,
                        help="TOML file of user classification rules ([exact] names and [[rule]] regexes); "
                             "they win over the built-in table.")(func)


def policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--clip", "clip", default=None, metavar="CAT=RULE,...",
                        help="Clip rule per category: percentile (seed search), percentile:Q, std:K or mse, "
                             "e.g. attn=std:12.5,embed=std:16.")(func)
    func = click.option("--bits-for", "bits_for", multiple=True, metavar="REGEX=N",
                        help="Force N-bit ints for tensors whose (expanded) name matches REGEX; repeatable.")(func)
    func = click.option("--bits", "bits", default=None, metavar="CAT=N,...",
                        help="Override bit widths per category, e.g. attn=6,mlp=5,embed=7.")(func)
    func = click.option("--policy", "policy_name", type=click.Choice(sorted(NAMED_POLICIES)), default=DEFAULT_POLICY,
                        show_default=True,
                        help="int6-mixed: attn+mlp int6, embed int8, other large int8, control fp32, small fp16; "
                             "seed: the seed's packer exactly (one percentile per tensor, scales floored at 1/levels, "
                             "small tensors fp16 before the control rule); "
                             "int8: every large tensor int8 (the public baseline); fp16: no integer quantization.")(func)
    return func


def budget_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--code-rule", type=click.Choice(CODE_RULES), default="raw", show_default=True,
                        help="How code bytes count: raw UTF-8 bytes as shipped, or the smallest "
                             "self-extracting compressed form.")(func)
    func = click.option("--budget", type=click.IntRange(min=1), default=DEFAULT_BUDGET, show_default=True,
                        help="Budget in bytes (decimal): artifact + code (+ loader).")(func)
    func = click.option("--code", "code_files", multiple=True, type=EXISTING_FILE,
                        help="A code file the submission ships (counted in the budget); repeatable. "
                             "Default: ./train_gpt.py when present.")(func)
    return func


def build_policy(policy_name: str, bits: str | None, bits_for: tuple[str, ...], clip: str | None) -> Policy:
    return resolve_policy(policy_name, bits, bits_for, clip)


def load_rules(path: str | None) -> UserRules | None:
    return UserRules.load(path) if path else None


def show_progress(flag: bool | None) -> bool:
    """--progress / --no-progress as given; unset: only when stderr is a terminal (a log
    file or CI gets no progress lines unless asked)."""
    return flag if flag is not None else sys.stderr.isatty()


def print_notices(notices: list[str], as_json: bool) -> None:
    for message in notices:
        note(message)
