"""`artifactkit check`: the CI gate. Exit 0 within budget and clean, 1 over budget or
guard tripped, 2 bad input."""

from __future__ import annotations

import json
import math

import click

from artifactkit.budget import RULE_TEXT, BudgetLine, count_code
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    EXISTING_FILE,
    budget_options,
    code_paths,
    debug_option,
    input_file,
    json_option,
    loader_bytes_option,
)
from artifactkit.errors import InputError
from artifactkit.format.open import open_artifact
from artifactkit.io import MAX_TEXT_FILE_BYTES, read_bounded
from artifactkit.plan.rules import SMALL_TENSOR_THRESHOLD

EXIT_CHECK_FAILED = 1


def artifact_problems(artifact) -> list[str]:
    """Large float tensors that were stored under `other`: the fall-through guard."""
    names = [t.name for t in artifact.tensors
             if t.category == "other" and t.numel > SMALL_TENSOR_THRESHOLD and t.scheme != "raw"]
    if not names:
        return []
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5:,} more" if len(names) > 5 else "")
    return [f"{len(names):,} large tensor(s) fell through to 'other' ({shown}); add a rule with --rules at pack time"]


def roundtrip_problems(path: str, artifact_bytes: int, max_delta: float) -> tuple[float, list[str]]:
    """(delta_bpb, problems) from a `roundtrip-eval --json` document about this artifact."""
    try:
        document = json.loads(read_bounded(path, MAX_TEXT_FILE_BYTES, "a JSON document").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not a readable roundtrip-eval JSON document ({exc}); write it with "
                         "'artifactkit roundtrip-eval CKPT --artifact ARTIFACT --json > FILE'") from exc
    delta = document.get("delta_bpb") if isinstance(document, dict) else None
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta):
        raise InputError(f"{path}: has no numeric delta_bpb; write it with 'artifactkit roundtrip-eval ... --json'")
    if document.get("artifact_bytes") != artifact_bytes:
        evaluated = document.get("artifact_bytes")
        evaluated = f"{evaluated:,}" if isinstance(evaluated, int) else repr(evaluated)
        raise InputError(f"{path}: evaluated an artifact of {evaluated} bytes, not this "
                         f"{artifact_bytes:,}-byte one; rerun roundtrip-eval with --artifact pointing at it")
    if delta > max_delta:
        return float(delta), [f"roundtrip delta_bpb {delta:+.6f} exceeds --max-delta {max_delta} ({path})"]
    return float(delta), []


@click.command("check")
@input_file("artifact", "ARTIFACT")
@budget_options
@loader_bytes_option
@click.option("--roundtrip", "roundtrip_json", type=EXISTING_FILE, default=None,
              help="The 'roundtrip-eval --artifact ARTIFACT --json' output for this artifact (checked with --max-delta).")
@click.option("--max-delta", type=float, default=None,
              help="Fail (exit 1) when the --roundtrip document's delta_bpb (quantized - float) exceeds this.")
@json_option
@debug_option
@guarded
def check_command(artifact: str, code_files: tuple[str, ...], budget: int, code_rule: str, loader_bytes: int,
                  roundtrip_json: str | None, max_delta: float | None, as_json: bool) -> None:
    """The budget gate for CI: total = ARTIFACT bytes + code bytes (+ loader bytes)
    must be <= --budget (16,000,000 by default, decimal) and no large tensor may have
    fallen through classification. Exit 0 ok, 1 failed, 2 bad input. The code-byte
    rule used is always printed. With --roundtrip RT.json --max-delta X it also fails
    when quantization cost more than X bits per byte (roundtrip-eval's delta_bpb)."""
    if (roundtrip_json is None) != (max_delta is None):
        raise InputError("--roundtrip and --max-delta: pass both (the roundtrip-eval JSON and the bound) or neither")
    opened = open_artifact(artifact)
    code = count_code(code_paths(code_files))
    line = BudgetLine(budget, opened.artifact_bytes, code.bytes_for(code_rule), loader_bytes, code_rule)
    problems = artifact_problems(opened)
    if not line.ok:
        problems.append(f"over budget by {-line.headroom:,} bytes ({line.total_bytes:,} > {budget:,})")
    delta = None
    if roundtrip_json is not None:
        delta, found = roundtrip_problems(roundtrip_json, opened.artifact_bytes, max_delta)
        problems += found
    ok = not problems
    if as_json:
        emit_json({"artifact_bytes": line.model_bytes, "code_bytes": line.code_bytes, "loader_bytes": loader_bytes,
                   "total_bytes": line.total_bytes, "budget": budget, "headroom": line.headroom, "ok": ok,
                   "problems": problems, "code_rule": code_rule, "delta_bpb": delta, "max_delta": max_delta,
                   "code_files": [{"path": f.path, "raw_bytes": f.raw_bytes, "compressed_bytes": f.compressed_bytes}
                                  for f in code.files]})
    else:
        for f in code.files:
            click.echo(f"code  {f.path}: {f.raw_bytes:,} bytes raw, {f.compressed_bytes:,} self-extracting")
        click.echo(f"model {artifact}: {line.model_bytes:,} bytes ({opened.format})")
        if loader_bytes:
            click.echo(f"loader: {loader_bytes:,} bytes")
        if delta is not None:
            click.echo(f"roundtrip delta_bpb {delta:+.6f} (max {max_delta})")
        click.echo(f"total {line.total_bytes:,} of {budget:,} -> headroom {line.headroom:,} bytes "
                   f"[code rule: {RULE_TEXT[code_rule]}]")
        click.echo("OK" if ok else "FAILED")
    if not ok:
        for problem in problems:
            note(f"error: {artifact}: {problem}")
        raise SystemExit(EXIT_CHECK_FAILED)


COMMANDS = [check_command]
