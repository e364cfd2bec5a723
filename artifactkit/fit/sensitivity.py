"""What calibration tells `fit`: the model, calibration tokens, every F.linear weight's
Hessian and every F.embedding table's lookup counts, and the KL that quantizing one
matrix (or one role of a tied matrix) causes at the model output.

Why roles: a tied embedding is both the input lookup table and the output head. Its
two uses see different errors (the lookup of row i matters in proportion to how often
token i occurs; the head's error in proportion to the hidden states), so each role
gets its own proxy term, and each term is scaled to nats by a KL measured with only
that role quantized: `RoleOverride` swaps the weight that F.embedding or F.linear sees,
without touching the model's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from artifactkit.checkpoint import LoadedCheckpoint
from artifactkit.errors import InputError
from artifactkit.fit.candidates import ROLE_LINEAR, ROLE_LOOKUP, Group, MatrixStats
from artifactkit.plan.banks import expand_banks, restore_banks
from artifactkit.quantize.calibration import self_generated, tokens_from_shards
from artifactkit.quantize.gptq import WeightTracker, collect_statistics
from artifactkit.roundtrip.evaluate import default_seq_len
from artifactkit.roundtrip.model_factory import build_model
from eval.runtime import load_json_object

CALIB_BATCH = 8  # sequences per forward pass while collecting statistics


@dataclass
class Calibration:
    model: torch.nn.Module
    tokens: torch.Tensor  # [sequences, seq_len]
    hessians: dict[str, torch.Tensor]
    info: dict[str, Any]
    lookup_counts: dict[str, torch.Tensor] | None = None

    def stats(self, name: str) -> MatrixStats:
        return MatrixStats(self.hessians.get(name), (self.lookup_counts or {}).get(name))

    def batches(self) -> list[torch.Tensor]:
        return [self.tokens[start : start + CALIB_BATCH] for start in range(0, self.tokens.shape[0], CALIB_BATCH)]


@dataclass(frozen=True)
class CalibrationRequest:
    """What to calibrate on: `calib` is "self" / None (text the model samples) or a glob of
    training shards; `config` a JSON file of factory arguments (else the checkpoint's)."""

    calib: str | None
    calib_seqs: int
    seq_len: int | None
    config: str | None
    seed: int
    progress: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None


def calibration_tokens(model: torch.nn.Module, request: CalibrationRequest, seq_len: int,
                       device: torch.device) -> tuple[torch.Tensor, str]:
    source = request.calib or "self"
    if source == "self":
        tokens = self_generated(model, request.calib_seqs, seq_len, request.seed, device=device,
                                progress=request.progress, warn=request.warn)
        return tokens, "self-generated"
    return tokens_from_shards(source, request.calib_seqs, seq_len, request.seed), source


def collect_calibration(checkpoint: LoadedCheckpoint, request: CalibrationRequest, arch: str,
                        device: torch.device) -> Calibration:
    """Build the model, draw calibration tokens, and measure every F.linear weight's Hessian
    and every F.embedding table's lookup counts."""
    config = load_json_object(request.config) if request.config else dict(checkpoint.config or {})
    # Like roundtrip-eval: the project's factory takes no seq_len, so it lives in the training config.
    seq_len = request.seq_len or default_seq_len(config, checkpoint.train_config)
    model = build_model(arch, config, checkpoint.state_dict, where=str(checkpoint.path)).to(device)
    if request.progress and request.calib in (None, "self"):
        request.progress(f"sampling {request.calib_seqs} calibration sequences of {seq_len} tokens from the model "
                         "(cost grows with seq_len squared; --calib TRAINING_SHARDS needs one forward pass)")
    tokens, source = calibration_tokens(model, request, seq_len, device)
    if request.progress:
        request.progress(f"collecting Hessians on {tokens.shape[0]} x {tokens.shape[1]} calibration tokens")
    calibration = Calibration(model, tokens, {}, {"source": source, "sequences": int(tokens.shape[0]),
                                                  "seq_len": int(tokens.shape[1]), "arch": arch,
                                                  "seed": request.seed})
    calibration.hessians, calibration.lookup_counts = collect_statistics(model, calibration.batches(), device)
    return calibration


class RoleOverride(WeightTracker):
    """While active, F.linear / F.embedding calls whose weight is the named matrix (or a
    converted copy of it) use a replacement instead: `overrides[(name, role)]`, role
    `linear` or `lookup`, cast to the dtype the call would have used."""

    def __init__(self, model: torch.nn.Module, overrides: Mapping[tuple[str, str], torch.Tensor]) -> None:
        super().__init__(model)
        self.overrides = dict(overrides)
        self.used: set[tuple[str, str]] = set()

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        role = ROLE_LINEAR if func is F.linear else ROLE_LOOKUP if func is F.embedding else None
        if role is not None:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._name_of(weight)
            replacement = self.overrides.get((name, role)) if name is not None else None
            if replacement is not None:
                self.used.add((name, role))
                replacement = replacement.to(device=weight.device, dtype=weight.dtype)
                if len(args) > 1:
                    args = (args[0], replacement, *args[2:])
                else:
                    kwargs = {**kwargs, "weight": replacement}
        result = func(*args, **kwargs)
        self._follow_conversion(func, args, result)
        return result


def _log_probs(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    logits = model(batch.to(device=device, dtype=torch.long))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise InputError("model: the KL sensitivity needs model(ids) -> logits [B, T, V]; "
                         "use --damage hessian for models with another output")
    return torch.log_softmax(logits.float(), dim=-1)


def kl_sensitivities(calibration: Calibration, state_dict: Mapping[str, torch.Tensor], groups: list[Group],
                     reference: list[int], device: torch.device,
                     say: Callable[[str], None] = lambda _message: None) -> list[tuple[float, ...]]:
    """Per group, per role (`group.roles`): KL(float model || model with only this group --
    only this role of it, for a matrix with two roles -- at its `reference` candidate), in
    nats per calibration token. One forward pass over the calibration tokens per (group,
    role); the float model's log-probabilities are computed once; the model is given back
    with its float weights."""
    model = calibration.model
    batches = calibration.batches()
    expanded, records = expand_banks(state_dict)
    was_training = model.training
    model.eval()

    def mean_kl(reference_log_probs: list[torch.Tensor], mode: RoleOverride | None = None) -> float:
        total, count = 0.0, 0
        for batch, float_log_probs in zip(batches, reference_log_probs, strict=True):
            if mode is None:
                quantized_log_probs = _log_probs(model, batch, device).cpu()
            else:
                with mode:
                    quantized_log_probs = _log_probs(model, batch, device).cpu()
            kl = (float_log_probs.exp() * (float_log_probs - quantized_log_probs)).sum(dim=-1)
            total += float(kl.double().sum())
            count += kl.numel()
        return max(total / max(count, 1), 0.0)

    result = []
    try:
        with torch.no_grad():
            reference_log_probs = [_log_probs(model, batch, device).cpu() for batch in batches]
            for number, (group, index) in enumerate(zip(groups, reference, strict=True), 1):
                say(f"KL sensitivity of {group.name} ({number}/{len(groups)})")
                original = expanded[group.name]
                quantized = group.entries[index].restored().to(original.dtype)
                if len(group.roles) == 1:
                    trial = dict(expanded)
                    trial[group.name] = quantized
                    model.load_state_dict(restore_banks(trial, records), strict=True)
                    result.append((mean_kl(reference_log_probs),))
                    model.load_state_dict(dict(state_dict), strict=True)
                    continue
                per_role = []
                for role in group.roles:
                    mode = RoleOverride(model, {(group.name, role): quantized})
                    per_role.append(mean_kl(reference_log_probs, mode))
                    if (group.name, role) not in mode.used:
                        raise InputError(f"{group.name}: calibration saw it used as {role}, but the KL pass did not; "
                                         "the model's forward must be deterministic in which calls it makes")
                result.append(tuple(per_role))
    finally:
        model.load_state_dict(dict(state_dict), strict=True)
        model.train(was_training)
    return result
