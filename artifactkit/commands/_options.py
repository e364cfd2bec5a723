"""The options every command shares, declared once (not a command module): the same
name, help text, default and type wherever a command takes them, and a test
(`tests/artifactkit/test_cli_uniform.py`) that walks every command to keep it so.

| decorator / type                 | options                                                   |
|----------------------------------|-----------------------------------------------------------|
| `json_option`, `debug_option`    | `--json`, `--debug` (every command)                       |
| `progress_option`                | `--progress/--no-progress`; `show_progress` is its rule   |
| `codec_option`                   | `--codec` (pack, size-report, fit)                        |
| `device_option`                  | `--device` (roundtrip-eval, fit); default `cpu`, see below |
| `budget_options` (= `code_option`, `budget_option`, `code_rule_option`), `loader_bytes_option` | `--code`, `--budget`, `--code-rule`, `--loader-bytes` |
| `rules_option`, `policy_options` | `--rules`; `--policy`, `--bits`, `--bits-for`, `--clip`   |
| `input_file`, `output_option`    | positional input files; `-o/--output`                     |
| `POSITIVE_INT`, `BYTES`          | counts that must be >= 1; byte sizes with decimal units   |

`--device` defaults to `cpu` everywhere: the same command then gives the same val_bpb
and the same artifact bytes on every machine (CUDA runs bf16 autocast and other
kernels), so a number committed from one machine can be checked on another. A GPU is
one flag away: `--device cuda`, or `--device auto` (CUDA when visible).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from artifactkit.budget import CODE_RULES, DEFAULT_BUDGET, default_code_files
from artifactkit.commands._framework import CliState, note_at_end
from artifactkit.format.akit import DEFAULT_CODEC
from artifactkit.format.codecs import available_codecs
from artifactkit.plan.classify import UserRules
from artifactkit.plan.policy import DEFAULT_POLICY, NAMED_POLICIES, Policy, resolve_policy
from eval.runtime import DEVICE_CHOICES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

EXISTING_FILE = click.Path(exists=True, dir_okay=False, readable=True)
OUTPUT_FILE = click.Path(dir_okay=False)
CODEC_CHOICES = sorted(set(available_codecs()) | {"ans", "auto"})
DEFAULT_DEVICE = "cpu"


class PositiveInt(click.ParamType):
    """A whole number >= 1, with an error that says so in words."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip().replace("_", "")
            if not re.fullmatch(r"[+-]?\d+", text):
                self.fail(f"{value!r} is not a whole number; give an integer of at least 1", param, ctx)
            number = int(text)
        if number < 1:
            self.fail(f"{number:,} is too small; give an integer of at least 1", param, ctx)
        return number


# The challenge's units are decimal: 16MB is 16,000,000 bytes.
BYTE_UNITS = {"": 1, "b": 1, "kb": 1_000, "k": 1_000, "mb": 1_000_000, "m": 1_000_000, "gb": 1_000_000_000,
              "g": 1_000_000_000}
BINARY_UNITS = ("kib", "mib", "gib")


class ByteCount(click.ParamType):
    """A size in bytes: `16000000`, `16_000_000`, `16,000,000`, or a decimal unit
    (`16MB` = 16,000,000 bytes, `500kB`, `15.5MB`); binary units are refused because
    the challenge's budget is decimal."""

    name = "bytes"

    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            number = self._parse(str(value), param, ctx)
        if number < self.minimum:
            self.fail(f"{number:,} bytes is too small; give at least {self.minimum:,} bytes", param, ctx)
        return number

    def _parse(self, text: str, param: click.Parameter | None, ctx: click.Context | None) -> int:
        cleaned = text.strip().replace("_", "").replace(" ", "")
        match = re.fullmatch(r"(\d[\d,]*(?:\.\d+)?)([A-Za-z]*)", cleaned)
        unit = match.group(2).lower() if match else ""
        if match and unit in BINARY_UNITS:
            self.fail(f"{text!r} uses a binary unit; the budget is decimal bytes, e.g. 16MB = 16,000,000 bytes",
                      param, ctx)
        if not match or unit not in BYTE_UNITS:
            self.fail(f"{text!r} is not a number of bytes; give bytes as an integer (16000000, 16_000_000, "
                      "16,000,000) or with a decimal unit (16MB = 16,000,000 bytes, 500kB = 500,000 bytes)",
                      param, ctx)
        digits = match.group(1).replace(",", "")
        whole, _, fraction = digits.partition(".")
        scale = BYTE_UNITS[unit]
        numerator = int(whole + fraction) * scale
        denominator = 10 ** len(fraction)
        if numerator % denominator:
            self.fail(f"{text!r} is not a whole number of bytes ({numerator / denominator:,} bytes); "
                      "round it to whole bytes", param, ctx)
        return numerator // denominator


DEBUG_HELP = "Show the full traceback with an error."
POSITIVE_INT = PositiveInt()
BYTES = ByteCount()


def input_file(name: str, metavar: str) -> Decorator:
    """A positional input file that must exist (a missing one is one `error:` line, exit 2)."""
    return click.argument(name, metavar=metavar, type=EXISTING_FILE)


def output_option(what: str, required: bool = True, metavar: str | None = None,
                  default_text: str = "") -> Decorator:
    """`-o/--output`: every command that writes one file names it the same way."""
    return click.option("-o", "--output", "output", required=required, type=OUTPUT_FILE, default=None,
                        metavar=metavar, help=f"Where to write {what} (atomically).{default_text}")


def debug_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--debug` on every subcommand too (not only before it)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            state = ctx.find_object(CliState)
            if state is not None:
                state.debug = True
        return value

    return click.option("--debug", is_flag=True, expose_value=False, callback=callback, is_eager=True,
                        help=DEBUG_HELP)(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout and nothing else there (notices go to stderr).")(func)


def progress_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Progress on stderr. Default: only when stderr is a terminal.")(func)


def show_progress(flag: bool | None) -> bool:
    """--progress / --no-progress as given; unset: only when stderr is a terminal (a log
    file or CI gets no progress lines unless asked)."""
    return flag if flag is not None else sys.stderr.isatty()


def codec_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--codec", type=click.Choice(CODEC_CHOICES), default=DEFAULT_CODEC, show_default=True,
                        help="Payload codec when packing. ans: entropy coder for the int codes (side sections "
                             "lzma); auto: try every codec per section, keep the smallest.")(func)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True,
                        help="Where the model runs. cpu gives the same numbers on every machine; cuda (bf16 "
                             "autocast) or auto (CUDA when visible) to use a GPU.")(func)


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
                        help="Override bit widths per category, e.g. attn=6,mlp=5,embed=7 (matrices above the "
                             "small-tensor threshold; smaller ones stay fp16, use --bits-for for them).")(func)
    func = click.option("--policy", "policy_name", type=click.Choice(sorted(NAMED_POLICIES)), default=DEFAULT_POLICY,
                        show_default=True,
                        help="int6-mixed: attn+mlp int6, embed int8, other large int8, control fp32, small fp16; "
                             "seed: the seed's packer exactly (one percentile per tensor, scales floored at 1/levels, "
                             "small tensors fp16 before the control rule); "
                             "int8: every large tensor int8 (the public baseline); fp16: no integer quantization.")(func)
    return func


def code_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--code", "code_files", multiple=True, type=EXISTING_FILE,
                        help="A code file the submission ships (counted in the budget); repeatable. "
                             "Default: ./train_gpt.py when present.")(func)


def budget_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--budget", type=ByteCount(minimum=1), default=DEFAULT_BUDGET, show_default=True,
                        help="Budget in bytes (decimal), artifact + code (+ loader): 16000000, 16_000_000 or "
                             "16MB (= 16,000,000 bytes).")(func)


def code_rule_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--code-rule", type=click.Choice(CODE_RULES), default="raw", show_default=True,
                        help="How code bytes count: raw UTF-8 bytes as shipped (the challenge's rule), or the "
                             "smallest self-extracting compressed form.")(func)


def loader_bytes_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--loader-bytes", type=BYTES, default=0, show_default=True,
                        help="Bytes of a standalone loader pasted into the training script, if not among --code "
                             "files ('artifactkit export-loader --json' prints them; or pass the loader file with "
                             "--code).")(func)


def budget_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return code_option(budget_option(code_rule_option(func)))


def code_paths(code_files: Sequence[str]) -> list[str]:
    """The code files to count: those given with --code, else ./train_gpt.py when it
    exists; with neither, a notice (when the command ends) says that 0 code bytes are counted."""
    if code_files:
        return list(code_files)
    found = [str(path) for path in default_code_files()]
    if not found:
        note_at_end(f"notice: no --code given and no ./train_gpt.py in {Path.cwd()}: counting 0 code bytes; "
             "pass --code FILE for every file your submission ships")
    return found


def build_policy(policy_name: str, bits: str | None, bits_for: tuple[str, ...], clip: str | None) -> Policy:
    return resolve_policy(policy_name, bits, bits_for, clip)


def load_rules(path: str | None) -> UserRules | None:
    return UserRules.load(path) if path else None
