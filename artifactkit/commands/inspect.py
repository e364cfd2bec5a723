"""`artifactkit inspect` and `artifactkit unpack`: read any artifact (.akit or legacy)."""

from __future__ import annotations

import io
from collections import defaultdict

import click
import torch

from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import debug_option, input_file, json_option, output_option
from artifactkit.format.open import open_artifact
from artifactkit.format.reader import ArtifactReader
from artifactkit.io import atomic_write_bytes, refuse_overwriting_inputs
from artifactkit.plan.schemes import parse_kind, stored_bits
from artifactkit.table import fmt_int, render

# Legacy .ptz files name their passthrough tensors by dtype rather than by scheme.
LEGACY_BITS = {"float16": 16, "bfloat16": 16, "float32": 32}


def describe_artifact(artifact, path: str) -> dict:
    tensors = [{"name": t.name, "category": t.category, "scheme": t.label,
                "bits": stored_bits(kind, t.bits, t.dtype) if (kind := parse_kind(t.scheme)) else LEGACY_BITS.get(t.scheme),
                "shape": list(t.shape), "numel": t.numel, "dtype": t.dtype} for t in artifact.tensors]
    document = {
        "path": path,
        "format": artifact.format,
        "codec": artifact.codec,
        "artifact_bytes": artifact.artifact_bytes,
        "payload_sha256": artifact.payload_sha256,
        "policy": artifact.policy_name,
        "tensors": tensors,
        "dropped": list(artifact.dropped),
    }
    if isinstance(artifact, ArtifactReader):
        document["sections"] = artifact.header["sections"]
        document["banks"] = [b["name"] for b in artifact.header["banks"]]
        document["meta"] = {k: v for k, v in artifact.header.get("meta", {}).items() if k != "config"}
    return document


@click.command("inspect")
@input_file("artifact", "ARTIFACT")
@json_option
@debug_option
@guarded
def inspect_command(artifact: str, as_json: bool) -> None:
    """Show what ARTIFACT holds: format, codec, policy, sections and every tensor's
    category, scheme and shape. Reads .akit files and, detected by content, the public
    baseline's int8_clean_per_row_v1 .ptz and the seed's int6 .ptz."""
    opened = open_artifact(artifact)
    document = describe_artifact(opened, artifact)
    if as_json:
        emit_json(document)
        return
    click.echo(f"{artifact}: {document['format']}, codec {document['codec']}, policy {document['policy']}, "
               f"{document['artifact_bytes']:,} bytes, sha256(payload) {document['payload_sha256'][:16]}...")
    for section in document.get("sections", []):
        if section["raw_bytes"]:
            click.echo(f"  section {section['name']:<6} {section['codec']:<6} {section['raw_bytes']:>12,} raw -> "
                       f"{section['stored_bytes']:>12,} stored")
    click.echo()
    click.echo(render(["tensor", "category", "scheme", "shape", "params"],
                      [(t["name"], t["category"], t["scheme"], "x".join(map(str, t["shape"])) or "scalar",
                        fmt_int(t["numel"])) for t in document["tensors"]],
                      ("total", "", "", "", fmt_int(sum(t["numel"] for t in document["tensors"])))))
    per_category: dict[str, int] = defaultdict(int)
    for t in document["tensors"]:
        per_category[t["category"]] += t["numel"]
    if document["dropped"]:
        click.echo(f"\ndropped at pack time: {', '.join(document['dropped'])}")


@click.command("unpack")
@input_file("artifact", "ARTIFACT")
@output_option("the dequantized state dict (torch.save, loadable with weights_only=True)")
@click.option("--expanded", is_flag=True, help="Keep banks expanded into per-layer tensors (b.N.a.q, ...); "
              ".akit only (the legacy formats store no banks).")
@json_option
@debug_option
@guarded
def unpack_command(artifact: str, output: str, expanded: bool, as_json: bool) -> None:
    """Dequantize ARTIFACT into a plain state dict and save it with torch.save to OUTPUT.
    What comes back depends on what the format records:

    \b
    .akit                       banks restored (unless --expanded), original dtypes
    baseline int8 .ptz          original dtypes (recorded); the format has no banks
      (int8_clean_per_row_v1)
    seed int6 .ptz              records neither: per-layer names as stored (banks
                                stay split), int tensors float32, the rest as stored

    To evaluate a seed .ptz with its model's names and dtypes, give it to
    'roundtrip-eval CHECKPOINT --artifact FILE.ptz': the checkpoint is the template."""
    refuse_overwriting_inputs({"-o": output}, [artifact])
    opened = open_artifact(artifact)
    state = opened.expanded_state_dict() if expanded else opened.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(output, buffer.getvalue())
    if as_json:
        emit_json({"path": output, "tensors": len(state), "params": sum(t.numel() for t in state.values()),
                   "format": opened.format})
    else:
        note(f"wrote {output}: {len(state):,} tensors, {sum(t.numel() for t in state.values()):,} parameters "
             f"(dequantized from {opened.format})")


COMMANDS = [inspect_command, unpack_command]
