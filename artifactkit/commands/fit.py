"""`artifactkit fit`: choose bits and clip per matrix to fit a byte budget with the
least measured damage, pack the artifact and verify it. Parsing and printing only;
the work is in `artifactkit.fit.pipeline`."""

from __future__ import annotations

import click

from artifactkit.budget import RULE_TEXT
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    EXISTING_FILE,
    POSITIVE_INT,
    budget_options,
    code_paths,
    codec_option,
    debug_option,
    device_option,
    input_file,
    json_option,
    load_rules,
    output_option,
    progress_option,
    rules_option,
    show_progress,
)
from artifactkit.errors import InputError
from artifactkit.fit.pipeline import (
    DAMAGE_CHOICES,
    DAMAGE_HESSIAN_KL,
    DEFAULT_BITS_CHOICES,
    DEFAULT_CALIB_SEQS,
    DEFAULT_CLIP_CHOICES,
    FitOptions,
    FitResult,
    fit_checkpoint,
    parse_bits_choices,
    parse_clip_choices,
)
from artifactkit.format.akit import write_artifact
from artifactkit.io import refuse_overwriting_inputs
from artifactkit.roundtrip.evaluate import RoundtripOptions, roundtrip_eval
from artifactkit.table import fmt_int, render
from eval.runtime import load_tokenizer
from eval.shards import resolve_shards


def render_text(result: FitResult, output: str) -> str:
    rows = [(row["name"], row["category"], "x".join(map(str, row["shape"])), f"int{row['bits']}", row["clip"],
             row["method"], fmt_int(row["estimated_bytes"]), f"{row['damage']:.4g}") for row in result.plan_rows()]
    line = result.line
    step = result.smallest_step_bytes
    lines = [
        render(["tensor", "category", "shape", "scheme", "clip", "method", "est. bytes", "damage"], rows),
        "",
        f"damage proxy: {result.damage_proxy}"
        + (f" (calibration: {result.calibration['sequences']} x {result.calibration['seq_len']} tokens, "
           f"{result.calibration['source']})" if result.calibration else "")
        + f"; total damage {result.total_damage:.6g}",
        f"wrote {output}: {result.packed.artifact_bytes:,} bytes (estimated {result.estimated_model_bytes:,}), "
        f"codec {result.packed.header['codec']}, {result.real_packs} real packs, {result.rejected_steps} steps rejected",
        f"budget: model {line.model_bytes:,} + code {line.code_bytes:,} = {line.total_bytes:,} of {line.budget:,} "
        f"-> headroom {line.headroom:,} bytes [code rule: {RULE_TEXT[line.code_rule]}]",
        "smallest remaining step: " + ("none (every matrix is at its least-damage candidate)" if step is None
                                       else f"{step:,} bytes"),
    ]
    return "\n".join(lines)


@click.command("fit")
@input_file("checkpoint", "CHECKPOINT")
@output_option("the .akit artifact")
@budget_options
@click.option("--calib", default=None, metavar="self|GLOB",
              help="Calibration tokens: 'self' (sequences the model samples itself, the default when a model is "
                   "available) or a glob of TRAINING shards. Validation shards are refused.")
@click.option("--calib-seqs", type=POSITIVE_INT, default=DEFAULT_CALIB_SEQS, show_default=True,
              help="Calibration sequences.")
@click.option("--seq-len", type=POSITIVE_INT,
              help="Calibration sequence length. Default: seq_len / train_seq_len from the model config, then from "
                   "the checkpoint's training config, else 1024.")
@click.option("--model", "model_ref", metavar="MODULE:FUNCTION",
              help="Model factory, called as FUNCTION(config) -> nn.Module; overrides the checkpoint's 'arch'. "
                   "Without one, there is no calibration and damage is the squared weight error.")
@click.option("--config", "config_path", type=EXISTING_FILE,
              help="JSON object passed to the factory instead of the checkpoint's 'config' (for raw state dicts).")
@click.option("--bits-choices", default=",".join(map(str, DEFAULT_BITS_CHOICES)), show_default=True,
              help="Bit widths each matrix may take.")
@click.option("--clip-choices", default=",".join(DEFAULT_CLIP_CHOICES), show_default=True,
              help="Clip rules each matrix may take: percentile, percentile:Q, std:K, mse.")
@click.option("--gptq/--no-gptq", default=True, show_default=True,
              help="Quantize candidates with GPTQ (when calibration runs) instead of round-to-nearest.")
@click.option("--act-order/--no-act-order", default=True, show_default=True,
              help="GPTQ processes columns in order of decreasing Hessian diagonal.")
@click.option("--search-clip/--no-search-clip", default=True, show_default=True,
              help="GPTQ tries every candidate clip of the rule (5 for percentile, 21 for mse) and keeps, per row, "
                   "the one with the smallest calibration output error (slower, measured better).")
@click.option("--damage", type=click.Choice(DAMAGE_CHOICES), default=DAMAGE_HESSIAN_KL, show_default=True,
              help="With calibration: hessian = tr(dW H dW^T), each layer's output error; hessian-kl = the same "
                   "rescaled per matrix so its fewest-byte candidate equals the output KL it causes alone "
                   "(one extra forward pass over the calibration tokens per matrix).")
@codec_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the calibration tokens.")
@device_option
@click.option("--small-threshold", type=click.IntRange(min=0), default=None,
              help="Tensors with at most this many elements stay fp16 (default: the policy's, 65,536).")
@rules_option
@click.option("--val", "val", default=None, help="Validation shards (reporting only): print the roundtrip val_bpb "
              "of the written artifact. Needs --tokenizer.")
@click.option("--tokenizer", type=EXISTING_FILE, default=None, help="SentencePiece .model for --val.")
@click.option("--val-max-tokens", type=POSITIVE_INT, help="Score at most this many validation targets.")
@progress_option
@json_option
@debug_option
@guarded
def fit_command(checkpoint: str, output: str, code_files: tuple[str, ...], budget: int, code_rule: str,
                calib: str | None, calib_seqs: int, seq_len: int | None, model_ref: str | None, config_path: str | None,
                bits_choices: str,
                clip_choices: str, gptq: bool, act_order: bool, search_clip: bool, damage: str, codec: str, seed: int, device: str, small_threshold: int | None, rules_path: str | None,
                val: str | None, tokenizer: str | None, val_max_tokens: int | None, progress: bool | None,
                as_json: bool) -> None:
    """Choose bits and clip for every large matrix of CHECKPOINT so that artifact +
    code bytes fit --budget with the least damage, then pack and verify the artifact.

    Damage is the layer output error tr(dW H dW^T) on calibration activations (H from
    the layer's inputs), rescaled per matrix to the output KL it causes (--damage), when
    a model factory is known; else the squared weight error.
    Bytes of every candidate are measured with the real codec (--codec); the written artifact
    is packed for real and never exceeds the budget. Exit 1 when even the smallest
    plan does not fit.
    """
    refuse_overwriting_inputs({"-o": output}, [checkpoint, config_path, rules_path, tokenizer, *code_files])
    if val and not tokenizer:
        raise InputError("--val needs --tokenizer: pass the SentencePiece .model the shards were made with")
    if val:  # check the reporting inputs before the long part, not after it
        load_tokenizer(tokenizer)
        resolve_shards(val)
    options = FitOptions(
        budget=budget, code_files=code_paths(code_files), code_rule=code_rule,
        calib=calib, calib_seqs=calib_seqs, seq_len=seq_len, model=model_ref, config=config_path,
        bits_choices=parse_bits_choices(bits_choices), clip_choices=parse_clip_choices(clip_choices), gptq=gptq,
        act_order=act_order, search_clip=search_clip, damage=damage,
        codec=codec, seed=seed, device=device, user_rules=load_rules(rules_path),
        small_threshold=small_threshold,
        progress=note if show_progress(progress) else None,
        warn=note,
    )
    result = fit_checkpoint(checkpoint, options)
    for message in result.notices:
        note(message)
    write_artifact(output, result.packed)
    document = result.to_json()
    document["path"] = output
    if val:
        roundtrip = roundtrip_eval(checkpoint, RoundtripOptions(val=val, tokenizer=tokenizer, artifact=output,
                                                                max_tokens=val_max_tokens, device=device,
                                                                model=model_ref, config=config_path,
                                                                progress=show_progress(progress)))
        document["roundtrip"] = roundtrip.to_json()
    if as_json:
        emit_json(document)
        return
    click.echo(render_text(result, output))
    if val:
        rt = document["roundtrip"]
        click.echo(f"roundtrip val_bpb: float {rt['val_bpb_fp']:.6f}, artifact {rt['val_bpb_q']:.6f}, "
                   f"delta {rt['delta_bpb']:+.6f} ({rt['tokens']:,} tokens)")


COMMANDS = [fit_command]
