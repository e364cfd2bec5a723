"""Apply a quantization policy to a state dict: expand banks, classify, and turn every
tensor into what will be stored (int codes + scales, fp16, fp32, raw, or dropped).
The result (`QuantizedModel`) is what `artifactkit.format` encodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from artifactkit.errors import InputError
from artifactkit.plan.banks import BankRecord, expand_banks
from artifactkit.plan.classify import Classification, UserRules, classify_state_dict
from artifactkit.plan.policy import Policy, Scheme, default_policy
from artifactkit.plan.schemes import RAW_DTYPES, SchemeKind, dtype_name, numel_of
from artifactkit.quantize.intn import QuantizedTensor, quantize, relative_rms_error
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



def quantize_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    policy: Policy | None = None,
    user_rules: UserRules | None = None,
    meta: Mapping[str, Any] | None = None,
    precomputed: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Expand banks, classify, and apply the policy to every tensor.

    `precomputed` maps expanded names to (codes, scales) produced elsewhere (GPTQ);
    those tensors keep the policy's scheme but skip round-to-nearest.
    """
    policy = policy or default_policy()
    expanded, banks = expand_banks(state_dict)
    classification = classify_state_dict(expanded, user_rules, policy.small_threshold)
    entries: list[QuantEntry] = []
    dropped: list[str] = []
    for info in classification.tensors:
        tensor = expanded[info.name].detach().cpu()
        scheme, reason = policy.scheme_for(info.name, info.category, tensor)
        if scheme.kind is SchemeKind.DROP:
            dropped.append(info.name)
            continue
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
            entry.rel_error = relative_rms_error(tensor, entry.values)
        elif scheme.kind is SchemeKind.FP32:
            entry.values = tensor.to(torch.float32).contiguous()
            entry.rel_error = relative_rms_error(tensor, entry.values) if tensor.dtype == torch.float64 else 0.0
        else:  # raw
            if entry.dtype not in RAW_DTYPES:
                raise InputError(f"{info.name}: dtype {entry.dtype} cannot be stored; cast it to a supported dtype")
            entry.values = tensor.contiguous()
        entries.append(entry)
    clean_meta = {k: v for k, v in (meta or {}).items() if v is not None}
    return QuantizedModel(entries, dropped, banks, policy, classification, clean_meta)
