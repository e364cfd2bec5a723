"""Per-row symmetric integer quantization of 2-D (or flattened N-D) float tensors.

Convention, shared with GPTQ and the standalone loader: for N bits,
`levels = 2**(N-1) - 1`; `scale = fp16(clip / levels)` per row; `codes =
clamp(round(w / scale), -levels, levels)` computed with the *fp16-rounded* scale;
dequantized `codes * scale`. All-zero rows get scale 0. There is no floor at
1/levels (the seed and the public baseline both floored the scale, which rounds rows
with max|w| < 1 far too coarsely); only fp16 underflow is guarded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from artifactkit.clip import ClipRule, parse_clip_rule, quantize_with_clip, row_clip

MIN_BITS, MAX_BITS = 2, 8


def levels_for(bits: int) -> int:
    return 2 ** (bits - 1) - 1


@dataclass
class QuantizedTensor:
    codes: torch.Tensor  # int8 [rows, cols]
    scales: torch.Tensor  # float16 [rows]
    bits: int
    shape: tuple[int, ...]  # original shape (rows = shape[0], cols = prod(rest))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.codes, self.scales, self.shape, dtype)


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """View an N-D tensor (N >= 2) as [shape[0], prod(shape[1:])] in float32."""
    return tensor.detach().reshape(tensor.shape[0], -1).to(torch.float32)


def quantize(tensor: torch.Tensor, bits: int, clip: ClipRule | str) -> QuantizedTensor:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    rule = parse_clip_rule(clip) if isinstance(clip, str) else clip
    weight = as_rows(tensor)
    clip_per_row = row_clip(weight, bits, rule)
    codes, scales = quantize_with_clip(weight, bits, clip_per_row)
    return QuantizedTensor(codes, scales, bits, tuple(tensor.shape))


def dequantize(codes: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    values = codes.to(torch.float32) * scales.to(torch.float32).unsqueeze(1)
    return values.reshape(shape).to(dtype)


def relative_rms_error(original: torch.Tensor, restored: torch.Tensor) -> float:
    """||w - w_hat|| / ||w|| (0 for an all-zero tensor restored exactly)."""
    original = original.detach().to(torch.float64)
    diff = torch.linalg.vector_norm(original - restored.detach().to(torch.float64))
    norm = torch.linalg.vector_norm(original)
    if float(norm) == 0.0:
        return float(diff)
    return float(diff / norm)
