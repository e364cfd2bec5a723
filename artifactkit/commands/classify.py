"""`artifactkit classify`: show which category and scheme every tensor gets, and why."""

from __future__ import annotations

import click

from artifactkit.checkpoint import load_checkpoint
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    build_policy,
    debug_option,
    input_file,
    json_option,
    load_rules,
    policy_options,
    rules_option,
)
from artifactkit.errors import CheckFailed
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.classify import classify_state_dict
from artifactkit.table import fmt_int, render


@click.command("classify")
@input_file("checkpoint", "CHECKPOINT")
@rules_option
@policy_options
@click.option("--strict", is_flag=True, help="Exit 1 when a large float tensor matches no rule.")
@json_option
@debug_option
@guarded
def classify_command(checkpoint: str, rules_path: str | None, policy_name: str, bits: str | None,
                     bits_for: tuple[str, ...], clip: str | None, strict: bool, as_json: bool) -> None:
    """Classify every tensor of CHECKPOINT (after expanding parameter banks) into
    embed / attn / mlp / control / training_only / other, and show the scheme the
    policy gives it.

    Precedence: exact names in --rules > regexes in --rules > built-in table > other.
    A float tensor above 65,536 elements that lands in `other` is a warning (exit 1
    with --strict): it would silently fall to the fallback scheme.

    Rules file format (TOML):

    \b
        [exact]
        "encoder.proj.weight" = "mlp"
        [[rule]]
        regex = '\\.my_attn\\.'
        category = "attn"
        reason = "our attention block"
    """
    loaded = load_checkpoint(checkpoint)
    for message in loaded.notices:
        note(message)
    policy = build_policy(policy_name, bits, bits_for, clip)
    expanded, banks = expand_banks(loaded.state_dict)
    classification = classify_state_dict(expanded, load_rules(rules_path), policy.small_threshold)
    rows = []
    for info in classification.tensors:
        scheme, _reason = policy.scheme_for(info.name, info.category, expanded[info.name])
        rows.append((info, scheme))
    guard = classification.guard_message()
    if as_json:
        emit_json({
            "path": checkpoint,
            "kind": loaded.kind,
            "banks": [b.name for b in banks],
            "tensors": [{"name": i.name, "category": i.category, "numel": i.numel, "shape": list(i.shape),
                         "dtype": i.dtype, "scheme": s.label, "bits": s.stored_bits, "rule": i.reason,
                         "source": i.source} for i, s in rows],
            "unclassified": classification.unclassified,
        })
    else:
        if banks:
            note(f"notice: expanded {len(banks)} bank(s): {', '.join(b.name for b in banks)}")
        click.echo(render(
            ["tensor", "category", "scheme", "shape", "params", "rule"],
            [(i.name, i.category, s.label, "x".join(map(str, i.shape)) or "scalar", fmt_int(i.numel), i.reason)
             for i, s in rows],
            ("total", "", "", "", fmt_int(sum(i.numel for i, _ in rows)), ""),
        ))
    if guard:
        note(f"warning: {checkpoint}: {guard}")
        if strict:
            raise CheckFailed(f"{checkpoint}: {guard}")


COMMANDS = [classify_command]
