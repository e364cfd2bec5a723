"""`artifactkit pack`: checkpoint -> quantized, compressed `.akit` artifact."""

from __future__ import annotations

from collections import defaultdict

import click

from artifactkit.budget import RULE_TEXT, BudgetLine, count_code
from artifactkit.checkpoint import load_checkpoint
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    budget_options,
    build_policy,
    code_paths,
    codec_option,
    debug_option,
    input_file,
    json_option,
    load_rules,
    output_option,
    policy_options,
    rules_option,
)
from artifactkit.errors import CheckFailed
from artifactkit.format.akit import PackedArtifact, write_artifact
from artifactkit.io import refuse_overwriting_inputs
from artifactkit.plan.policy import parse_bits
from artifactkit.roundtrip.packing import pack_checkpoint
from artifactkit.table import fmt_int, render


def describe_packed(packed: PackedArtifact, path: str | None) -> dict:
    """The JSON contract shared by `pack` and `inspect`."""
    return {
        "path": path,
        "format": packed.header["format"],
        "codec": packed.header["codec"],
        "artifact_bytes": packed.artifact_bytes,
        "payload_sha256": packed.header["payload_sha256"],
        "policy": packed.header["policy"]["name"],
        "sections": packed.header["sections"],
        "tensors": [{"name": e.name, "category": e.category, "scheme": e.scheme.label,
                     "bits": e.scheme.stored_bits, "shape": list(e.shape), "numel": e.numel,
                     "rel_rms_error": e.rel_error, "reason": e.reason} for e in packed.model.entries],
        "dropped": packed.header["dropped"],
        "unclassified": packed.model.classification.unclassified,
    }


def category_summary(entries: list) -> list[tuple]:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        key = (entry.category, entry.scheme.label)
        totals[key][0] += 1
        totals[key][1] += entry.numel
    return [(c, s, n, fmt_int(p)) for (c, s), (n, p) in sorted(totals.items())]


@click.command("pack")
@input_file("checkpoint", "CHECKPOINT")
@output_option("the .akit artifact")
@policy_options
@codec_option
@rules_option
@budget_options
@click.option("--strict", is_flag=True,
              help="Fail (exit 1, nothing written) when a large tensor is unclassified or the budget is exceeded.")
@json_option
@debug_option
@guarded
def pack_command(checkpoint: str, output: str, policy_name: str, bits: str | None, bits_for: tuple[str, ...],
                 clip: str | None, codec: str, rules_path: str | None, code_files: tuple[str, ...], budget: int,
                 code_rule: str, strict: bool, as_json: bool) -> None:
    """Quantize CHECKPOINT under a policy and write a self-describing, pickle-free
    .akit artifact. Same input and options give a byte-identical file.

    CHECKPOINT may be an artifactkit checkpoint, a raw state dict (torch.save) or a
    .safetensors file. Parameter banks are expanded for classification and
    quantization, and restored by `unpack`.
    """
    refuse_overwriting_inputs({"-o": output}, [checkpoint, rules_path, *code_files])
    loaded = load_checkpoint(checkpoint)
    for message in loaded.notices:
        note(message)
    policy = build_policy(policy_name, bits, bits_for, clip)
    packed_checkpoint = pack_checkpoint(loaded, policy, codec, load_rules(rules_path), parse_bits(bits))
    packed = packed_checkpoint.packed
    for message in [*packed.model.notices, *packed_checkpoint.notices]:
        note(message)
    problems = []
    guard = packed.model.classification.guard_message()
    if guard:
        note(f"warning: {checkpoint}: {guard}")
        problems.append(guard)
    code = count_code(code_paths(code_files))
    line = BudgetLine(budget, packed.artifact_bytes, code.bytes_for(code_rule), 0, code_rule)
    if not line.ok:
        message = f"over budget by {-line.headroom:,} bytes (total {line.total_bytes:,} > {budget:,})"
        note(f"warning: {output}: {message}")
        problems.append(message)
    if strict and problems:
        raise CheckFailed(f"{checkpoint}: {'; '.join(problems)}; nothing was written (--strict)")
    write_artifact(output, packed)
    if as_json:
        document = describe_packed(packed, output)
        document["budget"] = line.to_json()
        emit_json(document)
        return
    click.echo(render(["tensor", "category", "scheme", "shape", "params", "rel rms err"],
                      [(e.name, e.category, e.scheme.label, "x".join(map(str, e.shape)) or "scalar",
                        fmt_int(e.numel), "-" if e.rel_error is None else f"{e.rel_error:.4f}")
                       for e in packed.model.entries]))
    click.echo()
    click.echo(render(["category", "scheme", "tensors", "params"], category_summary(packed.model.entries)))
    if packed.header["dropped"]:
        click.echo(f"\ndropped (training-only): {', '.join(packed.header['dropped'])}")
    click.echo(f"\nwrote {output}: {packed.artifact_bytes:,} bytes, policy {packed.model.policy.name}, codec {codec} "
               f"({', '.join(s['name'] + ':' + s['codec'] for s in packed.header['sections'] if s['raw_bytes'])})")
    click.echo(f"budget: model {line.model_bytes:,} + code {line.code_bytes:,} = {line.total_bytes:,} "
               f"of {budget:,} -> headroom {line.headroom:,} bytes [code rule: {RULE_TEXT[code_rule]}]")


COMMANDS = [pack_command]
