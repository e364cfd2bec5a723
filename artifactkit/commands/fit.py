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
from artifactkit.fit.candidates import (
    DEFAULT_BITS_CHOICES,
    DEFAULT_CLIP_CHOICES,
    DEFAULT_LQER_RANK,
    DEFAULT_STEP_GRID,
    MIN_CLIP_STDS,
    parse_bits_choices,
    parse_clip_choices,
    parse_step_grid,
)
from artifactkit.fit.pipeline import (
    DAMAGE_CHOICES,
    DAMAGE_HESSIAN_KL,
    DEFAULT_CALIB_SEQS,
    FitOptions,
    FitResult,
    fit_checkpoint,
)
from artifactkit.format.akit import write_artifact
from artifactkit.io import refuse_overwriting_inputs
from artifactkit.roundtrip.evaluate import RoundtripOptions, roundtrip_eval
from artifactkit.table import fmt_int, render
from eval.runtime import load_tokenizer
from eval.shards import resolve_shards


def render_text(result: FitResult, output: str) -> str:
    rows = [(row["name"], row["category"], "x".join(map(str, row["shape"])),
             f"int{row['bits']}" + (f"+lqer{row['lqer_rank']}" if row["lqer_rank"] else "")
             if row["scheme"] == "int" else row["scheme"], row["clip"] or "-",
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
              help="Bit widths each matrix may take with each --clip-choices rule (none: no such candidates); "
                   "also the widths the --step-grid candidates pick from.")
@click.option("--clip-choices", default=",".join(DEFAULT_CLIP_CHOICES), show_default=True,
              help="Clip rules each matrix may take: percentile, percentile:Q, std:K, mse.")
@click.option("--step-grid", "step_grid", default="auto", show_default=True, metavar="auto|none|S,...",
              help="SDClip candidates: quantization steps in row standard deviations (scale = k * std / levels, "
                   "step = k / levels). Entropy-coded, the step -- not the nominal width -- sets the bytes, so this is "
                   f"the rate knob. Each step takes the narrowest width whose range reaches {MIN_CLIP_STDS:g} stds. "
                   f"auto: {','.join(f'{s:g}' for s in DEFAULT_STEP_GRID)}.")
@click.option("--keep-float/--no-keep-float", default=True, show_default=True,
              help="A matrix may also stay fp16 (the policy's scheme for small tensors): with a budget that "
                   "allows fp16 for everything, fit keeps everything fp16.")
@click.option("--lqer", "lqer_rank", type=click.IntRange(min=0), default=0, show_default=True, metavar="RANK",
              help="Also offer every int candidate with a rank-RANK LQER correction of its error (A int2, B int4 in "
                   f"groups of 64, as the public records store it; {DEFAULT_LQER_RANK} is the records' rank). 0: off. "
                   "The artifact then needs a loader exported with --artifact or --lowrank.")
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
                bits_choices: str, clip_choices: str, step_grid: str, keep_float: bool, lqer_rank: int, gptq: bool, act_order: bool, search_clip: bool, damage: str, codec: str, seed: int, device: str, small_threshold: int | None, rules_path: str | None,
                val: str | None, tokenizer: str | None, val_max_tokens: int | None, progress: bool | None,
                as_json: bool) -> None:
    """Choose how to store every large matrix of CHECKPOINT (bits, clip, SDClip step,
    fp16, optional LQER) so that artifact + code bytes fit --budget with the least
    damage, then pack and verify the artifact.

    Candidates per matrix: what 'pack' stores (so a budget that allows the default pack
    never gets a worse plan), --bits-choices x --clip-choices with GPTQ, the --step-grid
    steps, and fp16 (--keep-float). Damage is the layer output error tr(dW H dW^T) on
    calibration activations (H from the layer's inputs; a tied embedding's lookup role
    weighted by how often each row is looked up), rescaled per matrix and role to the
    output KL it causes (--damage), when a model factory is known; else the squared
    weight error.
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
        bits_choices=parse_bits_choices(bits_choices), clip_choices=parse_clip_choices(clip_choices),
        step_grid=parse_step_grid(step_grid), keep_float=keep_float, lqer_rank=lqer_rank, gptq=gptq,
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
