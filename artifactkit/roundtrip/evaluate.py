"""Roundtrip evaluation: val_bpb of the float checkpoint and of the dequantized artifact
on the very same tokens, and the difference (what quantization cost).

The artifact is either a file (`--artifact`: an `.akit`, or a legacy `.ptz` whose names
and dtypes are matched to the checkpoint's) or packed in memory exactly as `pack`
would write it with the default policy. Both models come from the same factory
reference and config. Under torchrun the windows of each evaluation are split across
ranks (see `eval.evaluate`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from artifactkit.checkpoint import LoadedCheckpoint, load_checkpoint
from artifactkit.errors import InputError
from artifactkit.format.legacy import LegacyArtifact
from artifactkit.format.open import open_artifact
from artifactkit.format.reader import ArtifactReader, read_artifact
from artifactkit.plan.banks import expand_banks, restore_banks
from artifactkit.roundtrip.model_factory import build_model
from artifactkit.roundtrip.packing import pack_checkpoint
from eval.bpb import ByteTables, build_byte_tables
from eval.evaluate import DEFAULT_BATCH_TOKENS, EvalError, EvalResult, evaluate_bpb
from eval.runtime import load_json_object, load_tokenizer, resolve_device
from eval.shards import ShardError, load_tokens

DEFAULT_SEQ_LEN = 1024
SEQ_LEN_CONFIG_KEYS = ("seq_len", "train_seq_len")


@dataclass
class RoundtripOptions:
    """Everything `roundtrip-eval` takes besides the checkpoint path."""

    val: str
    tokenizer: str
    artifact: str | None = None
    seq_len: int | None = None
    stride: int | None = None
    max_tokens: int | None = None
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    device: str = "cpu"
    model: str | None = None
    config: str | None = None
    progress: bool | None = None  # None: only when stderr is a terminal


@dataclass
class RoundtripResult:
    float_result: EvalResult
    quantized_result: EvalResult
    labels: dict[str, Any]
    notices: list[str] = field(default_factory=list)

    @property
    def delta_bpb(self) -> float:
        return self.quantized_result.val_bpb - self.float_result.val_bpb

    def to_json(self) -> dict[str, Any]:
        """The documented keys first, then the labels of what was evaluated."""
        return {
            "val_loss_fp": self.float_result.val_loss,
            "val_bpb_fp": self.float_result.val_bpb,
            "val_loss_q": self.quantized_result.val_loss,
            "val_bpb_q": self.quantized_result.val_bpb,
            "delta_bpb": self.delta_bpb,
            "tokens": self.float_result.tokens,
            "bytes": self.float_result.bytes,
            "mode": self.float_result.mode,
            "seq_len": self.float_result.seq_len,
            "stride": self.float_result.stride,
            **self.labels,
        }


def load_val_tokens(pattern: str) -> Any:
    try:
        return load_tokens(pattern)
    except ShardError as exc:
        raise InputError(str(exc)) from exc


def default_seq_len(*configs: dict[str, Any] | None) -> int:
    """The first positive `seq_len` / `train_seq_len` in `configs` (model config first,
    then the training config when the checkpoint carries one), else 1024."""
    for config in configs:
        for key in SEQ_LEN_CONFIG_KEYS:
            value = (config or {}).get(key) if isinstance(config, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return DEFAULT_SEQ_LEN


def scheme_counts(reader: ArtifactReader | LegacyArtifact) -> dict[str, int]:
    """How many tensors each scheme holds, e.g. {"int6": 4, "fp16": 3}."""
    return dict(sorted(Counter(tensor.label for tensor in reader.tensors).items()))


def legacy_state_dict(legacy: LegacyArtifact, checkpoint: LoadedCheckpoint,
                      where: str) -> tuple[dict[str, torch.Tensor], str]:
    """A legacy `.ptz` state dict in the checkpoint's layout: the seed's format records
    neither banks nor original dtypes (and the baseline's no banks), so the checkpoint is
    the template: per-layer tensors are stacked back into its banks and every tensor
    takes its dtype. Returns the state dict and a notice saying what was done."""
    template = checkpoint.state_dict
    expanded_template, banks = expand_banks(template)
    stored = legacy.state_dict()
    unknown = [name for name in stored if name not in template and name not in expanded_template]
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4:,} more" if len(unknown) > 4 else "")
        raise InputError(f"{where}: {len(unknown):,} tensors of this {legacy.format} file are not in the checkpoint "
                         f"({shown}); pass the checkpoint the artifact was packed from")
    state: dict[str, torch.Tensor] = {}
    cast = 0
    for name, tensor in stored.items():
        reference = template.get(name, expanded_template.get(name))
        if tuple(tensor.shape) != tuple(reference.shape):
            raise InputError(f"{where}: tensor {name!r} has shape {list(tensor.shape)} but the checkpoint's is "
                             f"{list(reference.shape)}; pass the checkpoint the artifact was packed from")
        cast += tensor.dtype != reference.dtype
        state[name] = tensor.to(reference.dtype)
    used_banks = [bank for bank in banks if any(member in state for member in bank.members)]
    state = restore_banks(state, used_banks)
    notice = (f"notice: {where} is a {legacy.format} file, which records "
              + ("neither banks nor original dtypes" if legacy.format.endswith("seed_int6") else "no banks")
              + f": names and dtypes follow the checkpoint ({len(used_banks):,} banks restored, "
              f"{cast:,} tensors cast to the checkpoint's dtype)")
    return state, notice


def _artifact(checkpoint: LoadedCheckpoint,
              path: str | None) -> tuple[ArtifactReader | LegacyArtifact, dict[str, torch.Tensor], str, list[str]]:
    """(artifact, the state dict the quantized model loads, where it came from, notices)."""
    if not path:
        packed = pack_checkpoint(checkpoint)
        reader = read_artifact(packed.packed.data)
        return reader, reader.state_dict(), "in memory (default policy, as 'pack' writes it)", packed.notices
    opened = open_artifact(path)
    if isinstance(opened, LegacyArtifact):
        state, notice = legacy_state_dict(opened, checkpoint, str(path))
        return opened, state, str(path), [notice]
    return opened, opened.state_dict(), str(path), []


def _evaluate(model: torch.nn.Module, tokens: Any, tables: ByteTables, options: RoundtripOptions,
              seq_len: int, device: torch.device, where: str) -> EvalResult:
    try:
        return evaluate_bpb(model, tokens, tables, seq_len=seq_len, batch_tokens=options.batch_tokens,
                            stride=options.stride, device=device, max_tokens=options.max_tokens,
                            progress=options.progress)
    except EvalError as exc:
        raise InputError(f"{where}: {exc}") from exc


def roundtrip_eval(checkpoint_path: str | Path, options: RoundtripOptions) -> RoundtripResult:
    """Evaluate the float checkpoint and the dequantized artifact on identical tokens."""
    checkpoint = load_checkpoint(checkpoint_path)
    notices = list(checkpoint.notices)
    arch = options.model or checkpoint.arch
    if not arch:
        raise InputError(
            f"{checkpoint_path}: is a {checkpoint.kind} with no model factory reference; "
            "pass --model module:function (and --config FILE.json for its arguments)"
        )
    config = load_json_object(options.config) if options.config else dict(checkpoint.config or {})
    sp, tokenizer_sha256 = load_tokenizer(options.tokenizer)
    if checkpoint.tokenizer_sha256 and checkpoint.tokenizer_sha256 != tokenizer_sha256:
        raise InputError(
            f"{options.tokenizer}: sha256 {tokenizer_sha256[:12]}... differs from the tokenizer the checkpoint "
            f"was trained with ({str(checkpoint.tokenizer_sha256)[:12]}...); pass the matching --tokenizer"
        )
    tokens = load_val_tokens(options.val)
    tables = build_byte_tables(sp, vocab_size=config.get("vocab_size") if isinstance(config.get("vocab_size"), int) else None)
    # The project's factory rejects unknown config keys, so its seq_len lives in the
    # checkpoint's training config (exposed by load_checkpoint as `train_config`, if at all).
    seq_len = options.seq_len or default_seq_len(config, getattr(checkpoint, "train_config", None))
    device = resolve_device(options.device)

    # Build the float model first: a wrong factory or config fails before any packing.
    float_model = build_model(arch, config, checkpoint.state_dict, where=str(checkpoint_path))
    reader, quantized_state, artifact_source, artifact_notices = _artifact(checkpoint, options.artifact)
    notices += artifact_notices
    where_artifact = options.artifact or f"{checkpoint_path} (packed in memory)"
    dropped = list(reader.dropped)

    float_result = _evaluate(float_model, tokens, tables, options, seq_len, device, str(checkpoint_path))
    del float_model
    hint = f" (the artifact dropped {len(dropped):,} training-only tensors)" if dropped else ""
    quantized_model = build_model(arch, config, quantized_state, where=where_artifact, absent_hint=hint)
    quantized_result = _evaluate(quantized_model, tokens, tables, options, seq_len, device, where_artifact)

    policy_name = reader.policy_name if isinstance(reader, ArtifactReader) else reader.format
    schemes = scheme_counts(reader)
    labels = {
        "scheme": f"{policy_name}: " + ", ".join(f"{label} x{count}" for label, count in schemes.items()),
        "checkpoint": str(checkpoint_path),
        "checkpoint_kind": checkpoint.kind,
        "arch": arch,
        "artifact": artifact_source,
        "artifact_bytes": reader.artifact_bytes,
        "policy": policy_name,
        "codec": reader.codec,
        "schemes": schemes,
        "device": str(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_available()
        and torch.distributed.is_initialized() else 1,
        "tokenizer": str(options.tokenizer),
        "val": str(options.val),
    }
    return RoundtripResult(float_result, quantized_result, labels, notices)
