"""The quantizer against a straightforward, independently written reference."""

from __future__ import annotations

import pytest
import torch

from artifactkit.plan.policy import resolve_policy
from artifactkit.quantize.intn import quantize


def reference_quantize(weight: torch.Tensor, bits: int, clip: torch.Tensor):
    """Row by row, in float64, with the documented convention."""
    levels = 2 ** (bits - 1) - 1
    codes = torch.zeros(weight.shape, dtype=torch.int8)
    scales = torch.zeros(weight.shape[0], dtype=torch.float16)
    for row in range(weight.shape[0]):
        if float(clip[row]) == 0.0:
            continue
        scale = torch.tensor(float(clip[row]) / levels).to(torch.float16)
        scale = max(float(scale), 2.0**-24)
        scales[row] = scale
        for col in range(weight.shape[1]):
            value = round(float(weight[row, col]) / scale)
            codes[row, col] = max(-levels, min(levels, value))
    return codes, scales


def reference_percentile_clip(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The seed's int6 rule: per row, the MSE-best percentile of |w|."""
    clips = []
    for row in weight:
        best = None
        for q in (0.999, 0.9995, 0.9999, 0.99999, 1.0):
            clip = torch.quantile(row.abs().double(), q).float()
            codes, scales = reference_quantize(row[None], bits, clip[None])
            error = float(((codes.double() * scales.double()[:, None] - row.double()) ** 2).mean())
            if best is None or error < best[0]:
                best = (error, clip)
        clips.append(best[1])
    return torch.stack(clips)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_matches_reference_including_special_rows(bits):
    torch.manual_seed(bits)
    weight = torch.randn(6, 40) * 0.05
    weight[1] = 0.0  # all-zero row
    weight[2, 7] = 3.0  # a single outlier
    weight[3] *= 1e-5  # magnitude far below 1 (the floor-at-1/levels bug)
    clip = weight.abs().amax(dim=1)
    result = quantize(weight, bits, "percentile:1.0")
    codes, scales = reference_quantize(weight, bits, clip)
    assert torch.equal(result.scales, scales)
    assert torch.equal(result.codes, codes)
    assert torch.all(result.codes[1] == 0) and float(result.scales[1]) == 0.0
    assert result.codes.abs().max() <= 2 ** (bits - 1) - 1


def test_small_rows_keep_precision():
    """Both the seed and the baseline floored the scale at 1/levels; we must not."""
    weight = torch.randn(8, 256) * 1e-3
    restored = quantize(weight, 6, "percentile").dequantize()
    relative = (restored - weight).norm() / weight.norm()
    assert relative < 0.05
    floored_scale = torch.clamp(weight.abs().amax(dim=1) / 31, min=1 / 31)
    floored = torch.round(weight / floored_scale[:, None]) * floored_scale[:, None]
    assert (floored - weight).norm() / weight.norm() > 0.9  # what the floor would have done


def test_percentile_search_matches_reference():
    torch.manual_seed(0)
    weight = torch.distributions.StudentT(3.0).sample((5, 2000)) * 0.02
    result = quantize(weight, 6, "percentile")
    clip = reference_percentile_clip(weight, 6)
    codes, scales = reference_quantize(weight, 6, clip)
    assert torch.equal(result.scales, scales)
    assert (result.codes != codes).float().mean() < 1e-3  # float32 vs float64 rounding ties only


def test_policies_and_overrides():
    weight = torch.randn(300, 300)
    mixed = resolve_policy("int6-mixed")
    assert mixed.scheme_for("b.0.a.q", "attn", weight)[0].label == "int6"
    assert mixed.scheme_for("tok_emb.weight", "embed", weight)[0].label == "int8"
    assert mixed.scheme_for("x", "other", weight)[0].label == "int8"
    assert mixed.scheme_for("skip_w", "control", weight)[0].label == "fp32"
    assert mixed.scheme_for("small", "attn", torch.randn(10, 10))[0].label == "fp16"
    assert mixed.scheme_for("ctx_proj.weight", "training_only", weight)[0].kind == "drop"
    assert resolve_policy("int8").scheme_for("b.0.a.q", "attn", weight)[0].label == "int8"
    custom = resolve_policy("int6-mixed", bits="attn=5,embed=7", bits_for=(r"b\.0\.m\.=4",))
    assert custom.scheme_for("b.1.a.q", "attn", weight)[0].label == "int5"
    assert custom.scheme_for("tok_emb.weight", "embed", weight)[0].label == "int7"
    assert custom.scheme_for("b.0.m.u", "mlp", weight)[0].label == "int4"
    assert custom.scheme_for("b.1.m.u", "mlp", weight)[0].label == "int6"
