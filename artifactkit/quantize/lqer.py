"""LQER: a low-rank correction of one matrix's quantization error.

The error E = W - dequant(codes) of an int-quantized matrix [rows, cols] is approximated
by its rank-r truncated SVD, E ~ U_r S_r V_r^T = A B with A = U_r S_r [rows, r] and
B = V_r^T [r, cols]; the model then uses dequant(codes) + A_hat B_hat. The factors are
themselves quantized the way the public records ("LQER asymmetric", records #1530 ->
#1851) store them:

* A: int2, one fp16 scale for the whole matrix, `scale = max|A| / 1.5`, codes
  round(A / scale) clamped to [-2, 1] (asymmetric: four levels);
* B: int4 in groups of `group` consecutive elements of B flattened row-major, one fp16
  scale per group, `scale = max|group| / 7.5`, codes clamped to [-8, 7].

Restoration is float32: `codes * scale` for each factor, then `A_hat @ B_hat`, added to
the dequantized matrix in float32 before the cast to the original dtype -- the same
operations in the same order in the reader and the standalone loader, so the two
agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from artifactkit.errors import InputError
from artifactkit.plan.schemes import valid_lowrank

DEFAULT_RANK = 4
DEFAULT_GROUP = 64
A_LEVELS = (-2, 1)  # int2, asymmetric
A_SCALE_DIVISOR = 1.5
B_LEVELS = (-8, 7)  # int4, asymmetric
B_SCALE_DIVISOR = 7.5
SMALLEST_SCALE = 1e-10  # the records' clamp before the fp16 cast


@dataclass
class LowRankFactors:
    """Quantized LQER factors of one [rows, cols] matrix."""

    a_codes: torch.Tensor  # int8 [rows, rank], values in A_LEVELS
    a_scale: torch.Tensor  # float16 [1]
    b_codes: torch.Tensor  # int8 [rank, cols], values in B_LEVELS
    b_scales: torch.Tensor  # float16 [rank * cols / group]
    group: int

    @property
    def rank(self) -> int:
        return int(self.a_codes.shape[1])

    def correction(self) -> torch.Tensor:
        """A_hat @ B_hat in float32 [rows, cols]."""
        a_hat = self.a_codes.to(torch.float32) * self.a_scale.to(torch.float32)
        b_hat = (self.b_codes.to(torch.float32).reshape(-1, self.group)
                 * self.b_scales.to(torch.float32).unsqueeze(1)).reshape(self.b_codes.shape)
        return a_hat @ b_hat

    def header_json(self) -> dict[str, int]:
        return {"rank": self.rank, "group": self.group}


def check_layout(rows: int, cols: int, rank: int, group: int, where: str) -> None:
    if not valid_lowrank({"rank": rank, "group": group}, (rows, cols)):
        raise InputError(f"{where}: low-rank factors of rank {rank} with groups of {group} do not fit a "
                         f"{rows} x {cols} matrix (1 <= rank <= min(rows, cols), and rank x cols a multiple of "
                         "the group); choose a smaller rank or a group that divides rank x cols")


def lowrank_factors(error: torch.Tensor, rank: int = DEFAULT_RANK, group: int = DEFAULT_GROUP) -> LowRankFactors:
    """Quantized rank-`rank` factors of `error` [rows, cols] (see the module docstring)."""
    error = error.detach().to(torch.float32)
    rows, cols = error.shape
    rank = min(rank, rows, cols)
    check_layout(rows, cols, rank, group, "LQER")
    left, singular, right = torch.linalg.svd(error, full_matrices=False)
    a = (left[:, :rank] * singular[:rank]).contiguous()
    b = right[:rank, :].contiguous()
    a_scale = (a.abs().amax().clamp_min(SMALLEST_SCALE) / A_SCALE_DIVISOR).to(torch.float16).reshape(1)
    a_codes = torch.clamp(torch.round(a / a_scale.float()), *A_LEVELS).to(torch.int8)
    grouped = b.reshape(-1, group)
    b_scales = (grouped.abs().amax(dim=1).clamp_min(SMALLEST_SCALE) / B_SCALE_DIVISOR).to(torch.float16)
    b_codes = torch.clamp(torch.round(grouped / b_scales.float().unsqueeze(1)), *B_LEVELS).to(torch.int8)
    return LowRankFactors(a_codes, a_scale, b_codes.reshape(b.shape), b_scales, group)
