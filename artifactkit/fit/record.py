"""The record recipe: the post-training quantization of the public leaderboard's best
entries, reproduced from our own pieces as one named, typed recipe.

Source read (not imported, not copied): `records/2026-04-29_SmearGateBOSFix_3Seed_1.06141`
in the shared folder, `train_gpt.py` (`collect_hessians`, `gptq_quantize_weight`,
`_lqer_pack_asym`, `gptq_mixed_quantize`, `serialize`); the constants are the ones its
run actually used, from the hyperparameter dump at the top of
`train_seed42_rerun_gptq8s.log`. What the recipe does, step by step:

| step | the record | here |
|---|---|---|
| calibration | 16 batches of TRAINING tokens (`gptq_calibration_batches`) | `calibration_sequences` windows of training shards (`tokens_from_shards`); validation shards are refused |
| Hessians | X^T X of each linear input, summed over batches / batches; the tied embedding's from the final-norm output (its output-head role) | `collect_hessians` (every `F.linear`; our tied head is `F.linear(final_norm(x), tok_emb.weight)`, the same role), rescaled to the record's convention |
| small tensors | float tensors <= 65,536 elements and every non-float tensor: passthrough, fp16 | the same: fp16, control tensors included (our default policy keeps control fp32); non-float raw |
| roles | `tok_emb` in the name -> embedding; `.mlp.` -> MLP; `.attn.` -> attention; any other large matrix -> "matrix" | `embed_pattern` on the name, then our classifier's category (bank slices have no `.mlp.` in their names) |
| SDClip | scale = fp16(k * std(row) / R), std UNBIASED (torch's default), R = 2^(bits-1) - 1; k = 13.0 attn, 12.0 MLP, 12.85 other, 15.0 embedding | exactly that scale (see below); `k_mult` multiplies every k (the rate knob) |
| widths | int6 matrices, int7 embedding | `matrix_bits`, `embed_bits` |
| GPTQ | act order (diag H descending), damp 1% of mean diag, block 128, Hinv upper Cholesky, dead columns (diag 0) zeroed | `gptq_quantize(..., act_order=True, damp=0.01, block_size=128)`; codes of dead columns set to 0 as the record's are |
| LQER | SVD of E = W - dequant(codes) on the 3 matrices with the largest ||E||_F; rank 4; A int2 per-matrix scale, B int4 in groups of 64 | `lowrank_factors` on the top `lqer_top_k` (same ranking, same storage) |

The sibling record `2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2` (and the issue text)
quote k = 11.5 for MLP and 14 (or 20) for the embedding; the log of the 04-29 record
says 12.0 and 15.0, and those are the defaults here. Any of them is one
`--recipe-option` away (`mlp_clip_sigmas=11.5`, `embed_clip_sigmas=14`).

**The unbiased std.** Our `std:K` clip rule multiplies the POPULATION std. The record's
scale is reproduced bit for bit: GPTQ runs with K = k * sqrt(n / (n - 1)) (n = row
length), which gives the record's fp16 scale on all but about one row in 20,000, where
the float32 products round to the neighbouring fp16 value; those rows are re-run alone
(GPTQ rows are independent given H) with a K fitted to the record's scale, and every
scale is checked against the record's formula. (A `scales=` argument to `gptq_quantize`
would make this a one-liner.)

What differs from the record's code, all outside its operating range: an all-zero row
gets scale 0 and codes 0 here (the record divides by a zero scale), and a constant
nonzero row falls back to max|w| (our intn convention); our GPTQ factors H in float64
(the record in float32), which can flip a code that lies within float32 rounding of a
tie; a matrix without a Hessian (a lookup table such as the BigramHash embedding, which
the record's model does not have and its code would fail on) is rounded to nearest with
the same SDClip scale; a matrix whose LQER factors do not fill whole groups of 64 (the
record falls back to symmetric int4 factors per row, which `.akit` does not store) gets
no correction, and the model's `meta` says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from artifactkit.checkpoint import LoadedCheckpoint, load_checkpoint
from artifactkit.errors import CheckFailed, InputError
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.classify import UserRules
from artifactkit.plan.clip_rules import ClipRule
from artifactkit.plan.policy import FP16, Policy, int_scheme
from artifactkit.plan.rules import SMALL_TENSOR_THRESHOLD
from artifactkit.plan.schemes import SchemeKind, check_bits, int_levels
from artifactkit.quantize.apply import QuantizedModel, quantize_state_dict
from artifactkit.quantize.calibration import self_generated, tokens_from_shards
from artifactkit.quantize.gptq import PreparedHessian, collect_hessians, gptq_quantize, prepare_hessian
from artifactkit.quantize.intn import QuantizedTensor, quantize_with_scales, relative_rms_error
from artifactkit.quantize.lqer import lowrank_factors
from artifactkit.roundtrip.evaluate import default_seq_len
from artifactkit.roundtrip.model_factory import build_model
from artifactkit.roundtrip.packing import checkpoint_meta
from eval.runtime import load_json_object, resolve_device

RECIPE_VERSION = 1
RECIPE_NAMES = ("record",)
RECORD_SOURCE = ("records/2026-04-29_SmearGateBOSFix_3Seed_1.06141: train_gpt.py, "
                 "constants from train_seed42_rerun_gptq8s.log")
CALIBRATION_BATCH = 8  # sequences per forward pass while collecting Hessians


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class RecordRecipe:
    """Settings of the record pipeline. Defaults are the 04-29 record's, from its log;
    `k_mult` scales every clip multiple at once (bytes follow the step size k, not the
    nominal width, once the codes are entropy-coded)."""

    attn_clip_sigmas: float = _help("SDClip k of attention matrices (record: 13.0).", 13.0)
    mlp_clip_sigmas: float = _help("SDClip k of MLP matrices (record log: 12.0; sibling record and issue: 11.5).", 12.0)
    matrix_clip_sigmas: float = _help("SDClip k of any other large matrix (record: 12.85).", 12.85)
    embed_clip_sigmas: float = _help("SDClip k of the token embedding (record log: 15.0; issue: 14).", 15.0)
    k_mult: float = _help("Common multiplier on every SDClip k (the rate knob; 1.0 = the record).", 1.0)
    matrix_bits: int = _help("Bit width of attention, MLP and other large matrices (record: 6).", 6)
    embed_bits: int = _help("Bit width of the token embedding (record: 7).", 7)
    embed_pattern: str = _help("Regex on the expanded name that marks the token embedding (record: 'tok_emb').",
                               r"tok_emb")
    small_threshold: int = _help("Float tensors with at most this many elements are stored fp16 (record: 65,536).",
                                 SMALL_TENSOR_THRESHOLD)
    gptq_block_size: int = _help("GPTQ lazy-update block (record: 128).", 128)
    gptq_damp: float = _help("GPTQ damping as a fraction of mean(diag H) (record: 0.01).", 0.01)
    act_order: bool = _help("GPTQ columns in descending diag(H) order (record: on).", True)
    lqer_top_k: int = _help("LQER on this many matrices with the largest GPTQ error norm (record: 3; 0 = off).", 3)
    lqer_rank: int = _help("LQER rank (record: 4).", 4)
    lqer_group: int = _help("Elements per int4 scale group of the LQER B factor (record: 64).", 64)
    calibration_sequences: int = _help("Training windows for the Hessians (record: 16 batches of 786,432 tokens).",
                                       64)
    seq_len: int | None = _help("Calibration window length (default: the checkpoint's training seq_len).", None)
    seed: int = _help("Seed of the calibration window draw.", 0)
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        where = "--recipe-option"
        for name in ("attn_clip_sigmas", "mlp_clip_sigmas", "matrix_clip_sigmas", "embed_clip_sigmas", "k_mult"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{where} {name}={value!r}: must be a finite number > 0; e.g. {name}=1.0")
        check_bits(self.matrix_bits, f"{where} matrix_bits")
        check_bits(self.embed_bits, f"{where} embed_bits")
        try:
            re.compile(self.embed_pattern)
        except re.error as exc:
            raise InputError(f"{where} embed_pattern={self.embed_pattern!r}: bad regular expression ({exc}); "
                             "fix the pattern") from None
        for name, lowest in (("small_threshold", 0), ("gptq_block_size", 1), ("lqer_top_k", 0), ("lqer_rank", 1),
                             ("lqer_group", 1), ("calibration_sequences", 1)):
            if getattr(self, name) < lowest:
                raise InputError(f"{where} {name}={getattr(self, name)}: must be at least {lowest}")
        if self.seq_len is not None and self.seq_len < 2:
            raise InputError(f"{where} seq_len={self.seq_len}: must be at least 2 (or unset)")
        if not self.gptq_damp >= 0:
            raise InputError(f"{where} gptq_damp={self.gptq_damp}: must be >= 0 (0.01 is the record's)")

    def clip_sigmas(self, role: str) -> float:
        """The SDClip multiple k (unbiased-std convention) of a role, `k_mult` applied."""
        base = {"embed": self.embed_clip_sigmas, "attn": self.attn_clip_sigmas, "mlp": self.mlp_clip_sigmas,
                "matrix": self.matrix_clip_sigmas}[role]
        return float(base) * float(self.k_mult)

    def bits(self, role: str) -> int:
        return int(self.embed_bits if role == "embed" else self.matrix_bits)

    def role(self, name: str, category: str) -> str:
        """embed / attn / mlp / matrix, in the record's test order: the embedding name first,
        then MLP, attention, else any other large matrix."""
        if re.search(self.embed_pattern, name):
            return "embed"
        if category in ("mlp", "attn"):
            return category
        return "matrix"

    def to_json(self) -> dict[str, Any]:
        return {"name": "record", "source": RECORD_SOURCE, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordRecipe:
        if int(data.get("version", 0)) != RECIPE_VERSION:
            raise InputError(f"record recipe version {data.get('version')!r} is not {RECIPE_VERSION}; "
                             "upgrade artifactkit")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def with_options(self, items: Iterable[str]) -> RecordRecipe:
        """`["k_mult=1.1", "embed_bits=8"]` -> a copy with those fields set (typed, checked)."""
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, text = str(item).partition("=")
            key = key.strip()
            if not sep or not key:
                raise InputError(f"--recipe-option {item!r}: expected KEY=VALUE such as k_mult=1.1; "
                                 f"keys: {', '.join(option_names())}")
            changes[key] = _parse_option(key, text.strip())
        return replace(self, **changes)


def option_names() -> list[str]:
    return [f.name for f in fields(RecordRecipe) if f.name != "version"]


def option_help() -> list[tuple[str, str, str]]:
    """(name, default, help) of every recipe option, for `--help` and the docs."""
    rows = []
    for item in fields(RecordRecipe):
        if item.name == "version":
            continue
        default = item.default if item.default is not MISSING else None
        rows.append((item.name, repr(default), item.metadata.get("help", "")))
    return rows


def _parse_option(key: str, text: str) -> Any:
    declared = {f.name: f for f in fields(RecordRecipe) if f.name != "version"}
    if key not in declared:
        raise InputError(f"--recipe-option {key}={text}: unknown option; use one of {', '.join(declared)}")
    default = declared[key].default
    try:
        if key == "seq_len":
            return None if text.lower() in ("", "none", "auto") else int(text)
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes", "on")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        return text
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise InputError(f"--recipe-option {key}={text}: not a valid {kind}; e.g. {key}={default!r}") from None


# --------------------------------------------------------------------------- scales and GPTQ


def record_scales(weight2d: torch.Tensor, bits: int, clip_sigmas: float) -> torch.Tensor:
    """The record's per-row scale, as it computes it: fp16(k * std(row) / R), std with
    Bessel's correction (torch's default), clamped at 1e-10 before the cast, float32."""
    row_std = weight2d.detach().float().std(dim=1)
    return (clip_sigmas * row_std / int_levels(bits)).clamp_min(1e-10).to(torch.float16)


def population_multiple(clip_sigmas: float, cols: int) -> float:
    """k on the unbiased std -> the multiple of the population std (`std:K`) with the same clip."""
    return float(clip_sigmas) * math.sqrt(cols / (cols - 1))


def _fitted_multiple(row: torch.Tensor, scale: torch.Tensor, bits: int) -> float:
    """A population-std multiple whose `std:K` clip gives exactly `scale` for this row."""
    return float(scale.float()) * int_levels(bits) / float(row.float().std(correction=0))


def _check_row_length(name: str, cols: int) -> None:
    if cols < 2:
        raise InputError(f"{name}: rows of {cols} element(s) have no standard deviation; "
                         "store this tensor fp16 (raise small_threshold) or reshape it")


def gptq_record_rows(weight2d: torch.Tensor, hessian: torch.Tensor, bits: int, clip_sigmas: float,
                     recipe: RecordRecipe, name: str = "weight") -> QuantizedTensor:
    """GPTQ of one matrix with the record's scales (every row checked against
    `record_scales`), act order, damping and block, and dead columns zeroed."""
    weight2d = weight2d.detach().float()
    rows, cols = weight2d.shape
    _check_row_length(name, cols)
    target = record_scales(weight2d, bits, clip_sigmas)
    prepared: PreparedHessian = prepare_hessian(hessian, damp=recipe.gptq_damp, act_order=recipe.act_order,
                                                name=name)

    def run(part: torch.Tensor, multiple: float) -> tuple[torch.Tensor, torch.Tensor]:
        return gptq_quantize(part, prepared, bits, ClipRule("std", multiple), block_size=recipe.gptq_block_size,
                             damp=recipe.gptq_damp, act_order=recipe.act_order, name=name)

    codes, scales = run(weight2d, population_multiple(clip_sigmas, cols))
    for row in (scales != target).nonzero().flatten().tolist():
        # float32 rounding put this row's scale on the neighbouring fp16 value: redo the
        # row alone (GPTQ rows are independent given H) with K fitted to the record's scale.
        single = weight2d[row : row + 1]
        if float(single.std(correction=0)) == 0.0:
            continue  # constant row: our convention (max|w|) stands, see the module docstring
        row_codes, row_scale = run(single, _fitted_multiple(single, target[row], bits))
        codes[row], scales[row] = row_codes[0], row_scale[0]
    nonzero = weight2d.std(dim=1, correction=0) > 0
    if not torch.equal(scales[nonzero], target[nonzero]):
        raise CheckFailed(f"{name}: could not reproduce the record's row scales; report this as a bug")
    dead = hessian.diagonal() == 0
    if bool(dead.any()):
        codes[:, dead] = 0  # the record zeroes dead columns of W before rounding
    return QuantizedTensor(codes.to(torch.int8).contiguous(), scales.contiguous(), bits, (rows, cols))


def rtn_record_rows(weight2d: torch.Tensor, bits: int, clip_sigmas: float, name: str = "weight") -> QuantizedTensor:
    """Round-to-nearest with the record's scales (for a matrix no `F.linear` call used)."""
    weight2d = weight2d.detach().float()
    _check_row_length(name, weight2d.shape[1])
    scales = record_scales(weight2d, bits, clip_sigmas)
    scales = torch.where(weight2d.abs().amax(dim=1) > 0, scales, torch.zeros_like(scales))
    return QuantizedTensor(quantize_with_scales(weight2d, scales, bits), scales, bits, tuple(weight2d.shape))


# --------------------------------------------------------------------------- calibration


def record_hessians(model: torch.nn.Module, tokens: torch.Tensor, device: torch.device | str = "cpu",
                    batch_sequences: int = CALIBRATION_BATCH) -> dict[str, torch.Tensor]:
    """Hessians of every `F.linear` weight on calibration `tokens` [sequences, seq_len],
    in the record's convention: sum over batches of X^T X, divided by the number of
    batches (`collect_hessians` gives 2 X^T X / tokens). GPTQ's rounding is invariant to
    the scale of H; only the damping of dead columns (diag 0, set to 1) sees it."""
    batches = [tokens[start : start + batch_sequences] for start in range(0, tokens.shape[0], batch_sequences)]
    hessians = collect_hessians(model, batches, device)
    tokens_per_batch = tokens.numel() / len(batches)
    return {name: hessian * (tokens_per_batch / 2.0) for name, hessian in hessians.items()}


# --------------------------------------------------------------------------- the recipe


def record_policy(recipe: RecordRecipe) -> Policy:
    """The policy the record's decisions amount to, written into the artifact header.
    Per-tensor widths and clips are then set on each entry (`record_quantize`)."""
    schemes = {
        "attn": int_scheme(recipe.matrix_bits, f"std:{recipe.clip_sigmas('attn')!r}"),
        "mlp": int_scheme(recipe.matrix_bits, f"std:{recipe.clip_sigmas('mlp')!r}"),
        "embed": int_scheme(recipe.embed_bits, f"std:{recipe.clip_sigmas('embed')!r}"),
        "other": int_scheme(recipe.matrix_bits, f"std:{recipe.clip_sigmas('matrix')!r}"),
    }
    return Policy(f"record(k_mult={recipe.k_mult!r})", schemes, small_threshold=int(recipe.small_threshold))


def record_quantize(state_dict: Mapping[str, torch.Tensor], hessians: Mapping[str, torch.Tensor],
                    recipe: RecordRecipe | None = None, *, user_rules: UserRules | None = None,
                    meta: Mapping[str, Any] | None = None,
                    progress: Callable[[str], None] | None = None) -> QuantizedModel:
    """A state dict + its Hessians (`record_hessians`) -> the `QuantizedModel` the record
    pipeline stores: GPTQ with SDClip scales per role, fp16 small and control tensors,
    LQER factors on the `lqer_top_k` matrices with the largest GPTQ error."""
    recipe = recipe or RecordRecipe()
    say = progress or (lambda _message: None)
    policy = record_policy(recipe)
    expanded, _ = expand_banks(state_dict)
    # Classify and choose schemes with the policy; the codes come from the record's rules below.
    model = quantize_state_dict(state_dict, policy, user_rules, meta,
                                precomputed={name: _placeholder(tensor) for name, tensor in expanded.items()
                                             if tensor.is_floating_point() and tensor.ndim == 2})
    notices: list[str] = []
    errors: dict[str, float] = {}
    for entry in model.entries:
        if entry.scheme.kind is SchemeKind.FP32:
            # The record passes every small tensor through as fp16, its gains and mixes included.
            original = expanded[entry.name].detach().cpu()
            entry.scheme, entry.values = FP16, original.to(torch.float16).contiguous()
            entry.rel_error = relative_rms_error(original, entry.values)
            entry.reason = "record: small / control tensor passthrough, fp16"
            continue
        if not entry.scheme.is_int:
            continue
        role = recipe.role(entry.name, entry.category)
        bits, sigmas = recipe.bits(role), recipe.clip_sigmas(role)
        weight = expanded[entry.name].detach().cpu().float().reshape(entry.shape[0], -1)
        hessian = hessians.get(entry.name)
        say(f"record recipe: {entry.name} ({role}, int{bits}, k={sigmas:g})")
        if hessian is not None:
            quantized = gptq_record_rows(weight, hessian, bits, sigmas, recipe, entry.name)
            method = "GPTQ"
        else:
            quantized = rtn_record_rows(weight, bits, sigmas, entry.name)
            method = "round-to-nearest (no Hessian: not used by F.linear)"
            notices.append(f"{entry.name}: no Hessian, rounded to nearest with the record's scale")
        quantized.shape = tuple(entry.shape)
        entry.quantized = quantized
        entry.scheme = int_scheme(bits, f"std:{population_multiple(sigmas, weight.shape[1])!r}")
        entry.reason = f"record: {role}, int{bits}, SDClip k={sigmas:g} (unbiased std), {method}"
        restored = quantized.dequantize().reshape(weight.shape)
        errors[entry.name] = float(torch.linalg.vector_norm(weight - restored))
        entry.rel_error = errors[entry.name] / max(float(torch.linalg.vector_norm(weight)), 1e-30)
    lqer = _apply_lqer(model, expanded, errors, recipe, notices)
    model.meta = {**model.meta, "recipe": recipe.to_json(), "lqer": lqer, "recipe_notices": notices}
    return model


def _placeholder(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and scales that only stand in until the record's own are computed (skips
    the policy's round-to-nearest pass, which the recipe would throw away)."""
    return torch.zeros(tensor.shape, dtype=torch.int8), torch.zeros(tensor.shape[0], dtype=torch.float16)


def _apply_lqer(model: QuantizedModel, expanded: Mapping[str, torch.Tensor], errors: Mapping[str, float],
                recipe: RecordRecipe, notices: list[str]) -> list[str]:
    """Attach LQER factors to the `lqer_top_k` int matrices with the largest ||W - dequant||_F
    (the record's ranking, made before it checks whether the factors fill whole groups)."""
    if recipe.lqer_top_k <= 0:
        return []
    ranked = sorted(errors.items(), key=lambda item: (-item[1], item[0]))[: recipe.lqer_top_k]
    by_name = {entry.name: entry for entry in model.entries}
    chosen = []
    for name, _ in ranked:
        entry = by_name[name]
        rows = entry.shape[0]
        weight = expanded[name].detach().cpu().float().reshape(rows, -1)
        cols = weight.shape[1]
        rank = min(recipe.lqer_rank, rows, cols)
        if (rank * cols) % recipe.lqer_group:
            notices.append(f"{name}: LQER skipped, rank x cols = {rank * cols} is not a multiple of the group "
                           f"{recipe.lqer_group} (the record would store symmetric int4 factors, .akit does not)")
            continue
        error = weight - entry.quantized.dequantize().reshape(rows, cols)
        entry.lowrank = lowrank_factors(error, rank, recipe.lqer_group)
        entry.reason += f" + LQER rank {rank}"
        chosen.append(name)
    return chosen


def calibration_seq_len(recipe: RecordRecipe, checkpoint: LoadedCheckpoint, config: Mapping[str, Any]) -> int:
    return int(recipe.seq_len or default_seq_len(dict(config), checkpoint.train_config))


def quantize_checkpoint(checkpoint_path: str | Path, recipe: RecordRecipe, calib: str, *, model: str | None = None,
                        config: str | None = None, device: str = "cpu", user_rules: UserRules | None = None,
                        progress: Callable[[str], None] | None = None) -> tuple[QuantizedModel, LoadedCheckpoint]:
    """The whole recipe from a checkpoint file: build the model (its `arch`, or `model`),
    draw `calibration_sequences` windows of the TRAINING shards `calib` (or sample them
    from the model with `calib="self"`), collect the
    Hessians, quantize. Returns the model to encode and the loaded checkpoint."""
    say = progress or (lambda _message: None)
    checkpoint = load_checkpoint(checkpoint_path)
    arch = model or checkpoint.arch
    if not arch:
        raise InputError(f"{checkpoint_path}: the record recipe calibrates GPTQ by running the model, and this "
                         f"{checkpoint.kind} names no model factory; pass --model module:function "
                         "(and --config FILE.json)")
    factory_config = load_json_object(config) if config else dict(checkpoint.config or {})
    seq_len = calibration_seq_len(recipe, checkpoint, factory_config)
    target = resolve_device(device)
    network = build_model(arch, factory_config, checkpoint.state_dict, where=str(checkpoint_path)).to(target)
    if calib == "self":  # not the record's choice (it has training data), but allowed by the rules
        tokens = self_generated(network, recipe.calibration_sequences, seq_len, recipe.seed, device=target)
    else:
        tokens = tokens_from_shards(calib, recipe.calibration_sequences, seq_len, recipe.seed)
    say(f"record recipe: Hessians on {tokens.shape[0]} x {tokens.shape[1]} training tokens")
    hessians = record_hessians(network, tokens, target)
    del network
    meta = {**checkpoint_meta(checkpoint),
            "calibration": {"source": calib, "sequences": int(tokens.shape[0]), "seq_len": int(tokens.shape[1]),
                            "seed": recipe.seed}}
    return record_quantize(checkpoint.state_dict, hessians, recipe, user_rules=user_rules, meta=meta,
                           progress=say), checkpoint
