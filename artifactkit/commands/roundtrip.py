"""`artifactkit roundtrip-eval`: val_bpb of the float checkpoint and of its dequantized
artifact on the same tokens. Parsing and printing only; the work is in
`artifactkit.roundtrip.evaluate`."""

from __future__ import annotations

import click
import torch

from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    EXISTING_FILE,
    POSITIVE_INT,
    debug_option,
    device_option,
    input_file,
    json_option,
    progress_option,
    show_progress,
)
from artifactkit.errors import CheckFailed
from artifactkit.roundtrip.evaluate import RoundtripOptions, RoundtripResult, roundtrip_eval
from eval.evaluate import DEFAULT_BATCH_TOKENS
from eval.runtime import init_distributed, resolve_device


def render_text(result: RoundtripResult) -> str:
    fp, q, labels = result.float_result, result.quantized_result, result.labels
    window = f"seq_len {fp.seq_len}" + (f", stride {fp.stride}" if fp.stride else "")
    lines = [
        f"checkpoint  {labels['checkpoint']} ({labels['checkpoint_kind']}, model {labels['arch']})",
        f"artifact    {labels['artifact']}: {labels['artifact_bytes']:,} bytes, codec {labels['codec']}",
        f"scheme      {labels['scheme']}",
        f"evaluation  {fp.mode} ({window}), {fp.tokens:,} tokens, {fp.bytes:,} bytes scored, "
        f"{labels['device']} {labels['precision']}, world size {labels['world_size']}",
        "",
        f"{'':<11}{'val_loss':>12}{'val_bpb':>12}",
        f"{'float':<11}{fp.val_loss:>12.6f}{fp.val_bpb:>12.6f}",
        f"{'quantized':<11}{q.val_loss:>12.6f}{q.val_bpb:>12.6f}",
        f"{'delta':<11}{q.val_loss - fp.val_loss:>+12.6f}{result.delta_bpb:>+12.6f}",
    ]
    return "\n".join(lines)


@click.command("roundtrip-eval")
@input_file("checkpoint", "CHECKPOINT")
@click.option("--artifact", type=EXISTING_FILE, help="The artifact to compare: an .akit file, or a legacy .ptz "
              "(detected by content; its names and dtypes follow CHECKPOINT). Default: pack CHECKPOINT in memory "
              "exactly as 'pack' writes it with the default policy (int6-mixed).")
@click.option("--val", "val", required=True, help="Validation shards: a path or glob (quote it), read in sorted order.")
@click.option("--tokenizer", required=True, type=EXISTING_FILE, help="The SentencePiece .model the shards were made with.")
@click.option("--seq-len", type=POSITIVE_INT,
              help="Window length. Default: the checkpoint config's seq_len / train_seq_len, else 1024.")
@click.option("--stride", type=POSITIVE_INT,
              help="Sliding-window evaluation with this stride (each target scored once). Default: standard "
              "non-overlapping windows.")
@click.option("--max-tokens", type=POSITIVE_INT, help="Score at most this many targets (a quick check).")
@click.option("--batch-tokens", type=POSITIVE_INT, default=DEFAULT_BATCH_TOKENS, show_default=True,
              help="Tokens per forward pass (at least one window).")
@device_option
@click.option("--model", "model_ref", metavar="MODULE:FUNCTION",
              help="Model factory, called as FUNCTION(config) -> nn.Module; overrides the checkpoint's 'arch' and "
              "is required for raw state dicts. The current directory is importable (like python -m).")
@click.option("--config", "config_path", type=EXISTING_FILE,
              help="JSON object passed to the factory instead of the checkpoint's 'config'.")
@click.option("--max-delta", type=float, help="Exit 1 when delta_bpb (quantized - float) exceeds this.")
@progress_option
@json_option
@debug_option
@guarded
def roundtrip_eval_command(checkpoint: str, artifact: str | None, val: str, tokenizer: str, seq_len: int | None,
                           stride: int | None, max_tokens: int | None, batch_tokens: int, device: str,
                           model_ref: str | None, config_path: str | None, max_delta: float | None,
                           progress: bool | None, as_json: bool) -> None:
    """Evaluate CHECKPOINT (float) and its dequantized artifact on the same validation
    tokens; print val_loss and val_bpb for both and the difference.

    val_bpb follows the challenge's byte rule (control/unknown ids 0 bytes, byte-fallback
    ids 1 byte, a leading space 1 byte unless after a boundary), sums in float64.
    Under torchrun the windows are split across ranks and the sums all-reduced; only
    rank 0 prints. Exit 1 when --max-delta is given and exceeded.
    """
    options = RoundtripOptions(
        val=val, tokenizer=tokenizer, artifact=artifact, seq_len=seq_len, stride=stride, max_tokens=max_tokens,
        batch_tokens=batch_tokens, device=device, model=model_ref, config=config_path,
        progress=show_progress(progress),
    )
    created_group = init_distributed(resolve_device(device))
    try:
        result = roundtrip_eval(checkpoint, options)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
    finally:
        if created_group:
            torch.distributed.destroy_process_group()
    if rank != 0:
        return  # every rank computed the same all-reduced sums; rank 0 reports them
    if max_delta is not None:
        result.labels["max_delta"] = max_delta
        result.labels["passed"] = result.delta_bpb <= max_delta
    for notice in result.notices:
        note(notice)
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(render_text(result))
    if max_delta is not None and result.delta_bpb > max_delta:
        raise CheckFailed(
            f"{artifact or checkpoint}: delta_bpb {result.delta_bpb:+.6f} exceeds --max-delta {max_delta}; "
            "quantization costs more than allowed, use more bits for the damaged categories"
        )


COMMANDS = [roundtrip_eval_command]
