"""`artifactkit pack`: checkpoint -> quantized, compressed `.akit` artifact."""

from __future__ import annotations

from collections import defaultdict

import click
from click.core import ParameterSource

from artifactkit.budget import RULE_TEXT, BudgetLine, count_code
from artifactkit.checkpoint import load_checkpoint, looks_like_torch_save
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    EXISTING_FILE,
    budget_options,
    build_policy,
    code_paths,
    codec_option,
    debug_option,
    device_option,
    input_file,
    json_option,
    load_rules,
    output_option,
    policy_options,
    rules_option,
)
from artifactkit.errors import CheckFailed, InputError, describe
from artifactkit.fit.record import RECIPE_NAMES, RecordRecipe, option_help, quantize_checkpoint
from artifactkit.format.akit import MAGIC, PackedArtifact, encode_artifact, write_artifact
from artifactkit.format.legacy import looks_like_legacy
from artifactkit.format.reader import read_artifact
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


# Options that choose schemes by policy; a recipe chooses them itself.
POLICY_PARAMETERS = {"policy_name": "--policy", "bits": "--bits", "bits_for": "--bits-for", "clip": "--clip"}
RECIPE_ONLY_PARAMETERS = {"recipe_options": "--recipe-option", "calib": "--calib", "model_ref": "--model",
                          "config_path": "--config"}


def recipe_epilog() -> str:
    lines = ["\b", "--recipe-option keys (KEY=VALUE, repeatable; default in brackets):"]
    lines += [f"  {name} [{default}]: {text}" for name, default, text in option_help()]
    return "\n".join(lines)


def _given(ctx: click.Context, names: dict[str, str]) -> list[str]:
    return [flag for name, flag in names.items()
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]


def refuse_artifact_lookalikes(path: str, head: bytes) -> None:
    """A file (starting with `head`) that is neither an artifact nor a checkpoint but looks like one --
    named .akit without the AKIT header, or an xz / zlib stream as legacy .ptz files are -- gets an
    error saying what pack does with artifacts, instead of the checkpoint reader's "not a PyTorch
    checkpoint". Anything else is left to the readers."""
    if head == MAGIC or looks_like_torch_save(head) or path.lower().endswith(".safetensors"):
        return  # an artifact, or a checkpoint (whatever its name): their readers judge it
    if path.lower().endswith(".akit"):
        raise InputError(describe(path, "named .akit but has no artifactkit header (damaged, truncated or "
                                  "not an artifact)", "pack re-encodes intact .akit artifacts; pack the "
                                  "checkpoint it came from again"))
    if looks_like_legacy(head):
        raise InputError(describe(path, "looks like a legacy compressed artifact (.ptz: an xz or zlib stream), "
                                  "not a checkpoint", f"unpack it first (artifactkit unpack {path} -o ckpt.pt), "
                                  "then pack ckpt.pt"))


def reencode_artifact(path: str, codec: str) -> PackedArtifact:
    """An .akit input: its quantized model exactly as stored (codes, scales, float tensors,
    policy and meta), to be encoded again with the current coder -- e.g. an artifact written by
    an older artifactkit gets the newer codes coder with no change to a single weight."""
    ctx = click.get_current_context()
    clashing = _given(ctx, {**POLICY_PARAMETERS, "recipe_name": "--recipe", **RECIPE_ONLY_PARAMETERS,
                            "rules_path": "--rules"})
    if clashing:
        raise click.UsageError(f"{', '.join(clashing)} cannot be used with an .akit input ({path}): its codes are "
                               "final, so pack only re-encodes it (--codec); quantize again from the checkpoint")
    return encode_artifact(read_artifact(path).quantized_model(), codec)


def pack_with_recipe(checkpoint: str, recipe_options: tuple[str, ...], calib: str | None, model_ref: str | None,
                     config_path: str | None, device: str, rules_path: str | None, codec: str) -> PackedArtifact:
    """`--recipe record`: calibrate on training shards, quantize as the record does, encode."""
    ctx = click.get_current_context()
    clashing = _given(ctx, POLICY_PARAMETERS)
    if clashing:
        raise click.UsageError(f"{', '.join(clashing)} cannot be combined with --recipe: the recipe chooses "
                               "every scheme itself; change it with --recipe-option KEY=VALUE instead")
    if not calib:
        raise click.UsageError("--recipe record needs --calib 'train_*.bin': its GPTQ is calibrated on training "
                               "shards (validation shards are refused), or --calib self")
    recipe = RecordRecipe().with_options(recipe_options)
    model, loaded = quantize_checkpoint(checkpoint, recipe, calib, model=model_ref, config=config_path,
                                        device=device, user_rules=load_rules(rules_path))
    for message in loaded.notices:
        note(message)
    for message in model.meta.get("recipe_notices", []):
        note(f"notice: {message}")
    return encode_artifact(model, codec)


@click.command("pack", epilog=recipe_epilog())
@input_file("checkpoint", "CHECKPOINT")
@output_option("the .akit artifact")
@policy_options
@codec_option
@click.option("--recipe", "recipe_name", type=click.Choice(RECIPE_NAMES), default=None,
              help="Quantize with a named recipe instead of a policy. record: the public leaderboard's pipeline "
                   "(GPTQ act-order on training-shard Hessians, SDClip scales k*std(row)/R with k 13 attn, 12 MLP, "
                   "15 embedding, int6 matrices, int7 tied embedding, fp16 tensors <= 65,536 elements, LQER rank 4 "
                   "on the 3 matrices with the largest error); needs --calib. See the keys below.")
@click.option("--recipe-option", "recipe_options", multiple=True, metavar="KEY=VALUE",
              help="Change one recipe setting, e.g. k_mult=1.1 or embed_bits=8; repeatable.")
@click.option("--calib", default=None, metavar="GLOB|self",
              help="With --recipe: TRAINING shards to calibrate GPTQ on (validation shards are refused), or "
                   "'self' for text the model samples itself (slow on a CPU).")
@click.option("--model", "model_ref", metavar="MODULE:FUNCTION",
              help="With --recipe: model factory for calibration, overriding the checkpoint's 'arch'.")
@click.option("--config", "config_path", type=EXISTING_FILE,
              help="With --recipe: JSON object passed to the factory instead of the checkpoint's 'config'.")
@device_option
@rules_option
@budget_options
@click.option("--strict", is_flag=True,
              help="Fail (exit 1, nothing written) when a large tensor is unclassified or the budget is exceeded.")
@json_option
@debug_option
@guarded
def pack_command(checkpoint: str, output: str, policy_name: str, bits: str | None, bits_for: tuple[str, ...],
                 clip: str | None, codec: str, recipe_name: str | None, recipe_options: tuple[str, ...],
                 calib: str | None, model_ref: str | None, config_path: str | None, device: str,
                 rules_path: str | None, code_files: tuple[str, ...], budget: int, code_rule: str, strict: bool,
                 as_json: bool) -> None:
    """Quantize CHECKPOINT under a policy and write a self-describing, pickle-free
    .akit artifact. Same input and options give a byte-identical file.

    CHECKPOINT may be an artifactkit checkpoint, a raw state dict (torch.save) or a
    .safetensors file. Parameter banks are expanded for classification and
    quantization, and restored by `unpack`.

    With --recipe record, the schemes come from the record recipe instead of a
    policy: e.g. `artifactkit pack ckpt.pt --recipe record --calib 'data/train_*.bin'
    -o record.akit [--recipe-option k_mult=1.1]`.

    CHECKPOINT may also be an .akit artifact: pack then re-encodes it with this
    artifactkit's coder (or --codec) and changes no weight, e.g. to give an artifact
    packed by an older version the newer, smaller codes coder.
    """
    refuse_overwriting_inputs({"-o": output}, [checkpoint, rules_path, config_path, *code_files])
    with open(checkpoint, "rb") as handle:
        head = handle.read(len(MAGIC))
    refuse_artifact_lookalikes(checkpoint, head)
    if head == MAGIC:
        packed = reencode_artifact(checkpoint, codec)
    elif recipe_name is None:
        stray = _given(click.get_current_context(), RECIPE_ONLY_PARAMETERS)
        if stray:
            raise click.UsageError(f"{', '.join(stray)} apply only with --recipe record; add --recipe record "
                                   "or drop them")
        loaded = load_checkpoint(checkpoint)
        for message in loaded.notices:
            note(message)
        policy = build_policy(policy_name, bits, bits_for, clip)
        packed_checkpoint = pack_checkpoint(loaded, policy, codec, load_rules(rules_path), parse_bits(bits))
        packed = packed_checkpoint.packed
        for message in [*packed.model.notices, *packed_checkpoint.notices]:
            note(message)
    else:
        packed = pack_with_recipe(checkpoint, recipe_options, calib, model_ref, config_path, device, rules_path,
                                  codec)
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
