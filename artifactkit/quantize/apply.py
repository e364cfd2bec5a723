"""Apply a quantization policy to a state dict: expand banks, classify, and turn every
tensor into what will be stored (int codes + scales, fp16, fp32, raw, or dropped).
The result (`QuantizedModel`) is what `artifactkit.format` encodes.

What cannot round-trip is refused before any work, naming every tensor concerned:
dtypes no artifact stores (float8, complex, unsigned ints wider than 8 bits), and NaN
or inf in a tensor that would become integer codes (a NaN zeroes its row, an inf is
lost). NaN and inf in fp16 / fp32 tensors are kept exactly. Values the chosen scheme
cannot represent (beyond fp16 row scales, or underflowing to 0) are kept, quantized as
well as the scheme allows, and reported as notices with the tensor's relative error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from artifactkit.errors import InputError
from artifactkit.plan.banks import BankRecord, expand_banks
from artifactkit.plan.classify import Classification, UserRules, classify_state_dict
from artifactkit.plan.policy import Policy, Scheme, default_policy
from artifactkit.plan.schemes import FLOAT_DTYPES, RAW_DTYPES, SchemeKind, dtype_name, int_levels, numel_of
from artifactkit.quantize.intn import LARGEST_FP16, QuantizedTensor, as_rows, quantize, relative_rms_error
from artifactkit.quantize.lqer import LowRankFactors


@dataclass
class QuantEntry:
    """One shipped tensor after quantization, before encoding."""

    name: str
    category: str
    scheme: Scheme
    reason: str
    shape: tuple[int, ...]
    dtype: str  # original dtype, restored on unpack
    quantized: QuantizedTensor | None = None  # int schemes
    values: torch.Tensor | None = None  # fp16 / fp32 / raw schemes, already in stored dtype
    rel_error: float | None = None
    lowrank: LowRankFactors | None = None  # int schemes only: an LQER correction stored beside the codes

    @property
    def numel(self) -> int:
        return numel_of(self.shape)

    def header_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "category": self.category, "scheme": str(self.scheme.kind),
                               "shape": list(self.shape), "dtype": self.dtype}
        if self.scheme.is_int:
            out["bits"] = self.scheme.bits
            out["clip"] = self.scheme.clip
            if self.lowrank is not None:
                out["lowrank"] = self.lowrank.header_json()
        return out

    def restored(self) -> torch.Tensor:
        """What a model loads for this entry (float32 for int schemes, LQER applied)."""
        if self.quantized is None:
            return self.values
        restored = self.quantized.dequantize().reshape(self.shape[0], -1)
        if self.lowrank is not None:
            restored = restored + self.lowrank.correction()
        return restored.reshape(self.shape)


@dataclass
class QuantizedModel:
    entries: list[QuantEntry]
    dropped: list[str]
    banks: list[BankRecord]
    policy: Policy
    classification: Classification
    meta: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # values a scheme could not represent, per tensor



# A float scheme's relative error above this means values left its range (fp16 rounds to ~2e-4).
FLOAT_RANGE_NOTICE_ERROR = 1e-2
KEEP_IN_FLOAT = 'keep it in fp32 with [exact] "{name}" = "control" in a --rules file'


def _list(items: list[str]) -> str:
    return ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")


def refuse_unstorable(planned: list[tuple[str, Scheme, torch.Tensor]]) -> None:
    """InputError naming every tensor `pack` cannot round-trip: an unstorable dtype, or
    NaN / inf in a tensor that would be integer-quantized."""
    bad_dtypes = [f"{name} ({dtype_name(t.dtype)})" for name, _, t in planned
                  if dtype_name(t.dtype) not in FLOAT_DTYPES and dtype_name(t.dtype) not in RAW_DTYPES]
    if bad_dtypes:
        raise InputError(f"{_list(bad_dtypes)}: dtype not storable in an artifact (it holds {', '.join(FLOAT_DTYPES)} "
                         f"and {', '.join(RAW_DTYPES)}); nothing was written; cast these tensors to one of those "
                         "(e.g. .to(torch.bfloat16)) or leave them out of the state dict")
    non_finite = []
    for name, scheme, tensor in planned:
        if scheme.is_int and not bool(torch.isfinite(tensor).all()):
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            non_finite.append(f"{name} ({nan:,} NaN, {inf:,} inf)")
    if non_finite:
        first = non_finite[0].split(" (")[0]
        raise InputError(f"{_list(non_finite)}: NaN / inf values in tensor(s) that would become integer codes, which "
                         "cannot hold them (a NaN zeroes its row, an inf is lost); nothing was written; replace them "
                         f"(torch.nan_to_num) or {KEEP_IN_FLOAT.format(name=first)}, where they are stored exactly")


def _scaled_error(tensor: torch.Tensor, restored: torch.Tensor) -> float:
    """relative_rms_error, computed on values divided by max |w| so that magnitudes
    near the float64 limit do not overflow the norms."""
    peak = float(tensor.detach().abs().to(torch.float64).max())
    if not 0 < peak < float("inf"):
        return relative_rms_error(tensor, restored)
    return relative_rms_error(tensor.to(torch.float64) / peak, restored.to(torch.float64) / peak)


def range_notice(entry: QuantEntry, tensor: torch.Tensor) -> str | None:
    """A notice when the stored values cannot represent some of `tensor`'s magnitudes."""
    if entry.scheme.kind not in (SchemeKind.INT, SchemeKind.FP16, SchemeKind.FP32):
        return None
    keep = KEEP_IN_FLOAT.format(name=entry.name)
    peak = float(tensor.detach().to(torch.float64).abs().nan_to_num(posinf=0).max())
    if entry.quantized is not None:
        codes, scales = entry.quantized.codes, entry.quantized.scales.float()
        nonzero = as_rows(tensor.to(torch.float64)).abs().amax(dim=1) > 0
        saturated = int((scales >= LARGEST_FP16).sum())
        vanished = int((nonzero & (codes == 0).all(dim=1)).sum())
        if not saturated and not vanished:
            return None
        error = _scaled_error(tensor, entry.quantized.dequantize(torch.float64))
        if saturated:
            levels = int_levels(int(entry.scheme.bits))
            return (f"notice: {entry.name}: {saturated:,} of {codes.shape[0]:,} rows hold values beyond "
                    f"{entry.scheme.label} with fp16 row scales (max |w| {peak:.3g} clamps to "
                    f"±{LARGEST_FP16 * levels:,.0f}); relative error {error:.3g}; rescale it or {keep}")
        return (f"notice: {entry.name}: {vanished:,} of {codes.shape[0]:,} nonzero rows are too small for fp16 row "
                f"scales (max |w| {peak:.3g}) and become 0; relative error {error:.3g}; rescale it or {keep}")
    if tensor.dtype == entry.values.dtype:
        return None
    finite = torch.isfinite(tensor)
    overflow = int((finite & ~torch.isfinite(entry.values)).sum())
    underflow = int((finite & (tensor != 0) & (entry.values == 0)).sum())
    fix = "rescale it" + ("" if entry.scheme.kind is SchemeKind.FP32 else f" or {keep}")
    if overflow:
        return (f"notice: {entry.name}: {overflow:,} value(s) exceed the {entry.scheme.label} range (max |w| "
                f"{peak:.3g}) and become inf; relative error {entry.rel_error:.3g}; {fix}")
    if underflow and entry.rel_error > FLOAT_RANGE_NOTICE_ERROR:
        return (f"notice: {entry.name}: {underflow:,} nonzero value(s) are below the {entry.scheme.label} range and "
                f"become 0; relative error {entry.rel_error:.3g}; {fix}")
    return None


def _float_error(tensor: torch.Tensor, stored: torch.Tensor) -> float:
    """Relative error over the finite values (NaN / inf are stored exactly)."""
    finite = torch.isfinite(tensor)
    return relative_rms_error(tensor, stored) if bool(finite.all()) else relative_rms_error(tensor[finite], stored[finite])


def quantize_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    policy: Policy | None = None,
    user_rules: UserRules | None = None,
    meta: Mapping[str, Any] | None = None,
    precomputed: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Expand banks, classify, and apply the policy to every tensor.

    `precomputed` maps expanded names to (codes, scales) produced elsewhere (GPTQ, or
    the policy candidates `fit` has already quantized);
    those tensors keep the policy's scheme but skip round-to-nearest.
    """
    policy = policy or default_policy()
    expanded, banks = expand_banks(state_dict)
    classification = classify_state_dict(expanded, user_rules, policy.small_threshold)
    entries: list[QuantEntry] = []
    dropped: list[str] = []
    notices: list[str] = []
    planned = []
    for info in classification.tensors:
        tensor = expanded[info.name].detach().cpu()
        scheme, reason = policy.scheme_for(info.name, info.category, tensor)
        if scheme.kind is SchemeKind.DROP:
            dropped.append(info.name)
            continue
        planned.append((info, scheme, reason, tensor))
    refuse_unstorable([(info.name, scheme, tensor) for info, scheme, _, tensor in planned])
    for info, scheme, reason, tensor in planned:
        entry = QuantEntry(info.name, info.category, scheme, reason, tuple(tensor.shape), dtype_name(tensor.dtype))
        if scheme.is_int:
            if progress:
                progress(info.name)
            if precomputed and info.name in precomputed:
                codes, scales = precomputed[info.name]
                entry.quantized = QuantizedTensor(codes.to(torch.int8).reshape(tensor.shape[0], -1).contiguous(),
                                                  scales.to(torch.float16).contiguous(), int(scheme.bits),
                                                  tuple(tensor.shape))
                entry.reason += " (GPTQ)"
            else:
                entry.quantized = quantize(tensor, int(scheme.bits), str(scheme.clip))
            entry.rel_error = relative_rms_error(tensor, entry.quantized.dequantize())
        elif scheme.kind is SchemeKind.FP16:
            entry.values = tensor.to(torch.float16).contiguous()
            entry.rel_error = _float_error(tensor, entry.values)
        elif scheme.kind is SchemeKind.FP32:
            entry.values = tensor.to(torch.float32).contiguous()
            entry.rel_error = _float_error(tensor, entry.values) if tensor.dtype == torch.float64 else 0.0
        else:  # raw (refuse_unstorable has checked the dtype)
            entry.values = tensor.contiguous()
        notice = range_notice(entry, tensor) if tensor.numel() else None
        if notice:
            notices.append(notice)
        entries.append(entry)
    clean_meta = {k: v for k, v in (meta or {}).items() if v is not None}
    return QuantizedModel(entries, dropped, banks, policy, classification, clean_meta, notices)
