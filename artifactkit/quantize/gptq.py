"""GPTQ (Frantar et al., 2022): error-feedback rounding of per-row symmetric intN weights
against a per-layer input Hessian, and the collector that measures those Hessians.

This module owns these things:

* `gptq_quantize` - one 2-D weight [rows=out_features, cols=in_features] + its Hessian
  H = 2 X^T X / n [cols, cols] -> (codes int8, scales float16) in the project's intN
  convention (`artifactkit.quantize.intn`). Scales come from the clip rule applied to the
  ORIGINAL weights and stay fixed; only the rounding decisions use error feedback.
  `prepare_hessian` does the per-weight O(cols^3) work once (dead columns, act order,
  damped inverse factor) for callers that try many candidates on one weight (`fit`).
* `HessianCollector` / `collect_hessians` - a `TorchFunctionMode` that sees every
  `torch.nn.functional.linear` call of any model (nn.Linear included, and bank slices
  used as `F.linear(x, bank[i])`), and accumulates 2 X^T X / n in float64 per weight.
  Weights are recognised by storage (pointer, offset, shape, stride), so a slice of a
  3-D bank parameter maps to its expanded per-layer name; a weight cast inside the
  forward (`self.weight.to(x.dtype)`) is followed through the cast.
* `clip_candidates` / `search_clip=True` - for a searching clip rule, each row's clip
  chosen by the GPTQ-propagated output error d H d^T instead of the row's own rounding
  MSE (every candidate goes through GPTQ; rows are independent, so the choice is per row).
* `gptq_state_dict` - GPTQ for every tensor of an expanded state dict that has both a
  Hessian and a bit width.

What is not captured: matrix products written as `x @ w.T` or `torch.matmul` (only
`F.linear` is seen), and compiled models (collect on the eager module).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from artifactkit.errors import CheckFailed, InputError
from artifactkit.plan.banks import bank_layout, member_names
from artifactkit.plan.clip_rules import MSE_STD_MULTIPLES, SEED_PERCENTILES, ClipRule
from artifactkit.plan.schemes import int_levels
from artifactkit.quantize.intn import row_clip, scales_from_clip

# Tensor methods that make a converted copy of a weight inside a forward; the copy is
# followed back to the weight's name.
_CONVERSIONS = {
    torch.Tensor.to,
    torch.Tensor.type,
    torch.Tensor.bfloat16,
    torch.Tensor.half,
    torch.Tensor.float,
    torch.Tensor.double,
    torch.Tensor.contiguous,
    torch.Tensor.clone,
    torch.Tensor.detach,
}

MAX_DAMP_RETRIES = 6
# Columns per lazy-update block. Within a block every column's error is spread over the
# block's remaining columns elementwise (rows * cols * block / 2 work in all), while the
# lazy updates between blocks are GEMMs whose flops do not depend on the block size. On
# a CPU 32 is 2.4x faster than the paper's 128 for 21 stacked clip candidates of a
# 1536 x 512 matrix (codes identical in that measurement, 1e-5 of codes differ elsewhere).
DEFAULT_BLOCK_SIZE = 32
# Most floats the clip search stacks into one GPTQ pass (64M floats = 256 MB of float32).
STACK_ELEMENTS = 1 << 26


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (meta, some subclasses)
        return None
    return (tensor.device, pointer, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))


def weight_names(model: nn.Module) -> dict[tuple[Any, ...], str]:
    """Storage key -> expanded state-dict name, for every 2-D parameter and every
    dim-0 slice of a 3-D bank parameter of `model` (named by `artifactkit.plan.banks`)."""
    names: dict[tuple[Any, ...], str] = {}
    for name, parameter in model.named_parameters():
        if parameter.ndim == 2:
            key = _storage_key(parameter)
            if key is not None:
                names.setdefault(key, name)
        elif parameter.ndim == 3 and bank_layout(name) is not None:
            try:
                members = member_names(name, tuple(parameter.shape))
            except InputError:
                continue  # malformed bank: expand_banks reports it; its slices stay unmatched
            for index, member in enumerate(members):
                key = _storage_key(parameter[index])
                if key is not None:
                    names.setdefault(key, member)
    return names


class WeightTracker(TorchFunctionMode):
    """A torch function mode that knows which expanded state-dict name a tensor passed to a
    functional call belongs to: a parameter, a bank slice, or a converted copy of either
    (`self.weight.to(x.dtype)` inside a forward is followed back to its name)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._names = weight_names(model)
        self._aliases: dict[int, tuple[weakref.ref, str]] = {}

    def _name_of(self, tensor: Any) -> str | None:
        if not isinstance(tensor, torch.Tensor):
            return None
        alias = self._aliases.get(id(tensor))
        if alias is not None and alias[0]() is tensor:
            return alias[1]
        key = _storage_key(tensor)
        return self._names.get(key) if key is not None else None

    def _remember_alias(self, result: Any, name: str) -> None:
        if not isinstance(result, torch.Tensor):
            return
        identity = id(result)
        aliases = self._aliases

        def forget(dying: weakref.ref, identity: int = identity) -> None:
            # Only drop the entry this reference created; the id may already be reused.
            entry = aliases.get(identity)
            if entry is not None and entry[0] is dying:
                del aliases[identity]

        aliases[identity] = (weakref.ref(result, forget), name)

    def _follow_conversion(self, func: Callable[..., Any], args: tuple, result: Any) -> None:
        if func in _CONVERSIONS and args and result is not args[0]:
            name = self._name_of(args[0])
            if name is not None:
                self._remember_alias(result, name)


class HessianCollector(WeightTracker):
    """Accumulate H = 2 X^T X / n (float64) for the weight of every F.linear call made
    while the mode is active, and count the ids looked up in every F.embedding table:

        with HessianCollector(model) as collector:
            model(tokens)
        hessians, lookups = collector.hessians(), collector.lookup_counts

    `unmatched` counts F.linear calls whose weight is not a parameter (or bank slice,
    or a converted copy of one) of `model`, keyed by the weight's shape. A tied
    embedding shows up in both: its output-head role as a Hessian, its lookup role as
    per-row id counts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.lookup_counts: dict[str, torch.Tensor] = {}
        self.unmatched: dict[tuple[int, ...], int] = {}

    def _count_lookups(self, name: str, ids: torch.Tensor, rows: int) -> None:
        counts = torch.bincount(ids.detach().reshape(-1).long().cpu(), minlength=rows).to(torch.float64)[:rows]
        total = self.lookup_counts.get(name)
        self.lookup_counts[name] = counts if total is None else total + counts

    def _accumulate(self, name: str, inputs: torch.Tensor) -> None:
        rows = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float64)
        if rows.shape[0] == 0:
            return
        total = self._sums.get(name)
        if total is None:
            total = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device)
            self._sums[name] = total
        total.addmm_(rows.T, rows)
        self.counts[name] = self.counts.get(name, 0) + rows.shape[0]

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func is F.linear:
            inputs = args[0] if args else kwargs.get("input")
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._name_of(weight)
            if name is None:
                shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
                self.unmatched[shape] = self.unmatched.get(shape, 0) + 1
            else:
                self._accumulate(name, inputs)
        elif func is F.embedding:
            ids = args[0] if args else kwargs.get("input")
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._name_of(weight)
            if name is not None and isinstance(ids, torch.Tensor):
                self._count_lookups(name, ids, weight.shape[0])
        else:
            self._follow_conversion(func, args, result)
        return result

    def hessians(self) -> dict[str, torch.Tensor]:
        """name -> 2 X^T X / n (float64, on the device the inputs were on)."""
        return {name: total * (2.0 / self.counts[name]) for name, total in self._sums.items()}


def collect_hessians(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """Run `model(batch)` on every token batch [B, T] (moved to `device`; the model must
    already be there) in eval mode without gradients, and return the Hessian of every
    F.linear weight, named as in the expanded state dict (float64, on the CPU)."""
    return collect_statistics(model, batches, device)[0]


def collect_statistics(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`collect_hessians`, plus how often each row of every F.embedding table was looked
    up (name -> float64 counts [rows], on the CPU)."""
    device = torch.device(device)
    first = next(iter(model.parameters()), None)
    if first is not None and first.device.type != device.type:
        raise InputError(
            f"model: its parameters are on {first.device} but calibration runs on {device}; "
            f"move the model there first (model.to({str(device)!r}))"
        )
    collector = HessianCollector(model)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad(), collector:
            for batch in batches:
                model(batch.to(device=device, dtype=torch.long))
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise InputError("calibration: no batches were given; pass at least one calibration sequence")
    if not collector.counts:
        raise InputError(
            "model: no torch.nn.functional.linear call used one of the model's parameters; "
            "GPTQ needs linear layers (nn.Linear or F.linear on a weight / bank slice)"
        )
    return ({name: hessian.cpu() for name, hessian in collector.hessians().items()},
            dict(collector.lookup_counts))


def _inverse_hessian_factor(hessian: torch.Tensor, damp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, raising the damping
    tenfold (up to MAX_DAMP_RETRIES times) while H is numerically not positive definite."""
    identity = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    damping = damp * float(hessian.diagonal().mean())
    if damping <= 0:
        damping = 1e-8
    for _ in range(MAX_DAMP_RETRIES + 1):
        lower, info = torch.linalg.cholesky_ex(hessian + damping * identity)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0:
                return upper
        damping *= 10.0
    raise CheckFailed(
        f"{name}: Hessian is not positive definite even with damping {damping / 10:.3g}; "
        "collect more calibration tokens or quantize this tensor without GPTQ"
    )


def _feedback_round(
    work: torch.Tensor, scales: torch.Tensor, bits: int | torch.Tensor, inverse_factor: torch.Tensor, block_size: int
) -> torch.Tensor:
    """The GPTQ rounding loop: codes int8 [rows, cols] for `work` (float32, consumed) with
    fixed per-row `scales`, given the upper Cholesky factor of the damped inverse Hessian.
    `bits` is one width, or one per row (stacked candidates of different widths)."""
    rows, cols = work.shape
    work_device = work.device
    if isinstance(bits, torch.Tensor):
        levels = (2.0 ** (bits.to(work_device, torch.float32) - 1) - 1).reshape(rows)
    else:
        levels = torch.full((rows,), float(int_levels(bits)), device=work_device)
    scale32 = scales.float()
    zero_rows = scale32 == 0
    divisor = torch.where(zero_rows, torch.ones_like(scale32), scale32)
    codes = torch.zeros(rows, cols, dtype=torch.int8, device=work_device)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = work[:, start:end].clone()
        block_errors = torch.zeros_like(block)
        factor_block = inverse_factor[start:end, start:end]
        for offset in range(end - start):
            column = block[:, offset]
            rounded = torch.minimum(torch.maximum(torch.round(column / divisor), -levels), levels)
            rounded = torch.where(zero_rows, torch.zeros_like(rounded), rounded)
            codes[:, start + offset] = rounded.to(torch.int8)
            error = (column - rounded * scale32) / factor_block[offset, offset]
            # Spread this column's rounding error over the block's remaining columns.
            block[:, offset:].sub_(error[:, None] * factor_block[offset, offset:][None, :])
            block_errors[:, offset] = error
        # Lazy batch update: the block's accumulated error reaches later columns at once.
        work[:, end:].sub_(block_errors @ inverse_factor[start:end, end:])

    return codes


def clip_candidates(weight2d: torch.Tensor, bits: int, clip: ClipRule) -> list[torch.Tensor]:
    """The per-row clip vectors (float32 [rows]) a searching rule chooses among:
    `percentile` -> each of the seed percentiles (1.0 = max|w|); `mse` -> k*std for each
    of its multiples, and max|w|. A fixed rule (with a value) -> its one clip vector."""
    if clip.value is not None or clip.kind not in ("percentile", "mse"):
        return [row_clip(weight2d, bits, clip)]
    if clip.kind == "percentile":
        rules = [ClipRule("percentile", quantile) for quantile in SEED_PERCENTILES]
    else:
        rules = [ClipRule("std", multiple) for multiple in MSE_STD_MULTIPLES] + [ClipRule("percentile", 1.0)]
    return [row_clip(weight2d, bits, rule) for rule in rules]


def _best_rows_over_clips(
    work: torch.Tensor,
    hessian64: torch.Tensor,
    candidates: list[torch.Tensor],
    bits: int,
    inverse_factor: torch.Tensor,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ with every candidate clip; per row, the (codes, scale) of least d H d^T
    (`work` and `hessian64` in the same, possibly act-order permuted, column order).

    GPTQ rows are independent and share the inverse-Hessian factor, so the candidates
    are stacked along the rows and rounded in ONE pass: the column loop's Python
    overhead is paid once, not once per candidate (21 candidates for `mse`). Chunks
    keep the stacked copy under STACK_ELEMENTS floats."""
    rows, cols = work.shape
    hessian32 = hessian64.float()
    per_chunk = max(1, STACK_ELEMENTS // max(1, rows * cols))
    best_codes = best_scales = best_error = None
    for first in range(0, len(candidates), per_chunk):
        chunk = candidates[first:first + per_chunk]
        scales = torch.cat([scales_from_clip(clip, bits) for clip in chunk]).view(len(chunk), rows)
        codes = _feedback_round(work.repeat(len(chunk), 1), scales.reshape(-1), bits, inverse_factor, block_size)
        codes = codes.view(len(chunk), rows, cols)
        difference = work[None] - codes.float() * scales.float()[:, :, None]
        errors = ((difference @ hessian32) * difference).sum(dim=2)  # [candidates, rows]
        for codes_c, scales_c, error in zip(codes, scales, errors, strict=True):
            if best_error is None:
                best_codes, best_scales, best_error = codes_c, scales_c, error
                continue
            better = error < best_error  # strict: ties keep the earlier candidate
            best_codes = torch.where(better[:, None], codes_c, best_codes)
            best_scales = torch.where(better, scales_c, best_scales)
            best_error = torch.where(better, error, best_error)
    return best_codes, best_scales


def _check_damp(damp: float, name: str) -> None:
    if not damp >= 0:
        raise InputError(f"{name}: damp={damp}; use a non-negative damping fraction (0.01 is usual)")


@dataclass(frozen=True)
class PreparedHessian:
    """One weight's Hessian made ready for GPTQ once, for reuse across every (bits, clip)
    candidate of that weight: dead columns neutralised, act-order permutation applied, and
    the damped inverse factored (the O(cols^3) part, ~0.1 s for 1536 columns on a CPU)."""

    hessian64: torch.Tensor  # [cols, cols] float64, in GPTQ's (possibly permuted) column order
    inverse_factor: torch.Tensor  # float32 upper Cholesky factor of the damped inverse
    permutation: torch.Tensor | None  # act order, or None
    damp: float
    act_order: bool


def prepare_hessian(
    hessian: torch.Tensor,
    *,
    damp: float = 0.01,
    act_order: bool = False,
    device: torch.device | str | None = None,
    name: str = "weight",
) -> PreparedHessian:
    """`hessian` [cols, cols] -> PreparedHessian on `device` (default: the Hessian's)."""
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
        raise InputError(f"{name}: Hessian shape {tuple(hessian.shape)} is not square; "
                         "collect the Hessian for this tensor from the same model")
    _check_damp(damp, name)
    target = torch.device(device) if device is not None else hessian.device
    hessian64 = hessian.detach().to(target, torch.float64).clone()
    if not torch.isfinite(hessian64).all():
        raise InputError(f"{name}: Hessian has NaN or inf values; recollect it from finite activations")
    dead = hessian64.diagonal() <= 0
    hessian64[dead, :] = 0.0
    hessian64[:, dead] = 0.0
    hessian64[dead, dead] = 1.0
    permutation = None
    if act_order:
        permutation = torch.argsort(hessian64.diagonal(), descending=True, stable=True)
        hessian64 = hessian64[permutation][:, permutation]
    inverse_factor = _inverse_hessian_factor(hessian64, damp, name).to(torch.float32)
    return PreparedHessian(hessian64, inverse_factor, permutation, damp, act_order)


def _work_copy(weight: torch.Tensor, device: torch.device | str | None, name: str) -> torch.Tensor:
    """A float32 copy of `weight` on `device` (default: the weight's) that the rounding
    may consume; NaN or inf refused."""
    work_device = torch.device(device) if device is not None else weight.device
    work = weight.detach().to(work_device, torch.float32, copy=True)
    if not torch.isfinite(work).all():
        raise InputError(f"{name}: weight has NaN or inf values; fix the checkpoint before quantizing")
    return work


def _in_gptq_order(
    work: torch.Tensor, prepared: PreparedHessian
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`work` with its columns in the prepared Hessian's (act) order, the inverse factor on
    its device, and the index that puts codes back in the weight's column order (None
    without act order; computed once, not per candidate)."""
    inverse_factor = prepared.inverse_factor.to(work.device)
    if prepared.permutation is None:
        return work, inverse_factor, None
    permutation = prepared.permutation.to(work.device)
    return work[:, permutation], inverse_factor, torch.argsort(permutation)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor | PreparedHessian,
    bits: int,
    clip: ClipRule,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    damp: float = 0.01,
    act_order: bool = False,
    search_clip: bool = False,
    device: torch.device | str | None = None,
    name: str = "weight",
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ-round `weight` [rows, cols] given its input Hessian [cols, cols].

    Returns (codes int8 [rows, cols], scales float16 [rows]) on `weight`'s device, in the
    convention of `artifactkit.quantize.intn.quantize_with_clip`; with an identity (or any
    diagonal) Hessian the codes equal round-to-nearest exactly. Columns whose Hessian
    diagonal is 0 (inputs never active in calibration) are rounded to nearest and
    exchange no error with the others. `device` picks where the work runs (default:
    the weight's device); the Hessian factorisation runs in float64, the updates in
    float32.

    With `search_clip`, a searching rule (`percentile` or `mse` without a value) does not
    pick each row's clip by the row's own rounding MSE: every candidate clip of the rule
    (`clip_candidates`) goes through GPTQ, and each row keeps the candidate whose
    GPTQ-rounded row has the least output error d H d^T (rows are independent in GPTQ,
    so the per-row choice is exact). A fixed rule has one candidate, so it is unchanged.

    `hessian` may be a `PreparedHessian` (from `prepare_hessian` with the same `damp` and
    `act_order`): quantizing one weight under many candidates then factors it once."""
    if weight.ndim != 2:
        raise InputError(f"{name}: GPTQ needs a 2-D weight, got shape {tuple(weight.shape)}; expand banks first")
    rows, cols = weight.shape
    given_shape = tuple((hessian.hessian64 if isinstance(hessian, PreparedHessian) else hessian).shape)
    if given_shape != (cols, cols):
        raise InputError(
            f"{name}: Hessian shape {given_shape} does not match {cols} input columns; "
            "collect the Hessian for this tensor from the same model"
        )
    if block_size < 1:
        raise InputError(f"{name}: block_size={block_size}; use a positive block size (32 here, 128 in the paper)")
    if isinstance(hessian, PreparedHessian) and (hessian.damp, hessian.act_order) != (damp, act_order):
        raise InputError(f"{name}: the prepared Hessian has damp={hessian.damp}, act_order={hessian.act_order} "
                         f"but damp={damp}, act_order={act_order} was asked; prepare it with the same options")
    _check_damp(damp, name)
    work = _work_copy(weight, device, name)
    candidates = clip_candidates(work, bits, clip) if search_clip else [row_clip(work, bits, clip)]
    scales = scales_from_clip(candidates[0], bits)
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols, dtype=torch.int8, device=weight.device), scales.to(weight.device)

    prepared = (hessian if isinstance(hessian, PreparedHessian)
                else prepare_hessian(hessian, damp=damp, act_order=act_order, device=work.device, name=name))
    work, inverse_factor, unpermute = _in_gptq_order(work, prepared)

    if len(candidates) == 1:
        codes = _feedback_round(work, scales, bits, inverse_factor, block_size)
    else:
        hessian64 = prepared.hessian64.to(work.device)
        codes, scales = _best_rows_over_clips(work, hessian64, candidates, bits, inverse_factor, block_size)
    if unpermute is not None:
        codes = codes[:, unpermute]
    return codes.to(weight.device), scales.to(weight.device)


def gptq_candidates(
    weight: torch.Tensor,
    prepared: PreparedHessian,
    candidates: list[tuple[int, torch.Tensor]],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: torch.device | str | None = None,
    name: str = "weight",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """GPTQ-round `weight` [rows, cols] once per candidate (bits, per-row clip float32
    [rows]), all in stacked passes (rows are independent and share the factor, so the
    column loop runs once per chunk, not once per candidate). Returns (codes int8,
    scales float16) per candidate, on the CPU, exactly what `gptq_quantize` returns for
    that fixed clip vector."""
    if weight.ndim != 2 or tuple(prepared.hessian64.shape) != (weight.shape[1], weight.shape[1]):
        raise InputError(f"{name}: GPTQ needs a 2-D weight whose columns match the prepared Hessian; "
                         "collect the Hessian for this tensor from the same model")
    rows, cols = weight.shape
    work = _work_copy(weight, device, name)
    scales = [scales_from_clip(clip.to(work.device), bits) for bits, clip in candidates]
    if rows == 0 or cols == 0:
        return [(torch.zeros(rows, cols, dtype=torch.int8), scale.cpu()) for scale in scales]
    work, inverse_factor, unpermute = _in_gptq_order(work, prepared)
    per_chunk = max(1, STACK_ELEMENTS // max(1, rows * cols))
    results = []
    for first in range(0, len(candidates), per_chunk):
        chunk = range(first, min(first + per_chunk, len(candidates)))
        stacked_bits = torch.cat([torch.full((rows,), candidates[i][0]) for i in chunk])
        stacked_scales = torch.cat([scales[i] for i in chunk])
        codes = _feedback_round(work.repeat(len(chunk), 1), stacked_scales, stacked_bits, inverse_factor, block_size)
        for offset, index in enumerate(chunk):
            block = codes[offset * rows:(offset + 1) * rows]
            if unpermute is not None:
                block = block[:, unpermute]
            results.append((block.cpu(), scales[index].cpu()))
    return results


def gptq_state_dict(
    expanded_state_dict: Mapping[str, torch.Tensor],
    hessians: Mapping[str, torch.Tensor],
    bits_for: Callable[[str], int | None],
    clip_for: Callable[[str, int], ClipRule],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    damp: float = 0.01,
    act_order: bool = False,
    search_clip: bool = False,
    device: torch.device | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """GPTQ every tensor that has a Hessian and a bit width (`bits_for(name)` not None):
    name -> (codes int8, scales float16), on the CPU. Tensors without a Hessian are left
    to the caller (round-to-nearest); `search_clip` as in `gptq_quantize`; `progress(name)` is called before each tensor."""
    result: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, tensor in expanded_state_dict.items():
        hessian = hessians.get(name)
        if hessian is None:
            continue
        bits = bits_for(name)
        if bits is None:
            continue
        if tensor.ndim != 2 or not tensor.is_floating_point():
            raise InputError(
                f"{name}: GPTQ needs a 2-D float tensor, got {tuple(tensor.shape)} {tensor.dtype}; "
                "give this tensor no bit width or expand it to 2-D"
            )
        if progress is not None:
            progress(name)
        codes, scales = gptq_quantize(
            tensor,
            hessian,
            bits,
            clip_for(name, bits),
            block_size=block_size,
            damp=damp,
            act_order=act_order,
            search_clip=search_clip,
            device=device,
            name=name,
        )
        result[name] = (codes.cpu(), scales.cpu())
    return result
