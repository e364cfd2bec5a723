"""Clip rules and the per-row intN quantizer, checked against straightforward per-row
loop references written here (numpy / torch.quantile), independent of artifactkit.quantize.intn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactkit.errors import InputError
from artifactkit.plan.clip_rules import MSE_STD_MULTIPLES, SEED_PERCENTILES, ClipRule, parse_clip_rule
from artifactkit.quantize.intn import SMALLEST_FP16, dequantize, quantize_with_clip, row_clip


def heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Rows with different tail weights (Student-t with 2..30 degrees of freedom), so the
    MSE-best clip differs from row to row."""
    generator = np.random.default_rng(seed)
    degrees = np.linspace(2, 30, rows)[:, None]
    values = generator.standard_t(degrees, size=(rows, cols)) * 0.02
    return torch.tensor(values, dtype=torch.float32)


def reference_quantize(row: np.ndarray, clip: float, bits: int) -> tuple[np.ndarray, np.float16]:
    """One row, the project convention, in numpy."""
    levels = 2 ** (bits - 1) - 1
    scale = np.float16(np.float32(clip) / np.float32(levels))
    if clip > 0:
        scale = max(scale, np.float16(2.0**-24))
    else:
        scale = np.float16(0)
    if scale == 0:
        return np.zeros(row.shape, dtype=np.int8), scale
    codes = np.clip(np.round(row.astype(np.float32) / np.float32(scale)), -levels, levels)
    return codes.astype(np.int8), scale


def reference_row_error(row: np.ndarray, clip: float, bits: int) -> float:
    codes, scale = reference_quantize(row, clip, bits)
    recon = codes.astype(np.float32) * np.float32(scale)
    return float(np.mean((row.astype(np.float32) - recon) ** 2))


def reference_search(weight: torch.Tensor, bits: int, candidates_for_row) -> torch.Tensor:
    """Per-row loop: the candidate with the smallest MSE, first one on ties."""
    chosen = []
    for row in weight:
        best_clip, best_error = None, float("inf")
        for clip in candidates_for_row(row):
            error = reference_row_error(row.numpy(), clip, bits)
            if error < best_error:
                best_clip, best_error = clip, error
        chosen.append(best_clip)
    return torch.tensor(chosen, dtype=torch.float32)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_quantize_with_clip_matches_numpy_reference(bits):
    weight = heavy_tailed(16, 96, seed=bits)
    clip = weight.abs().amax(dim=1) * 0.7
    codes, scales = quantize_with_clip(weight, bits, clip)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float16
    for row in range(weight.shape[0]):
        expected_codes, expected_scale = reference_quantize(weight[row].numpy(), float(clip[row]), bits)
        assert np.array_equal(codes[row].numpy(), expected_codes)
        assert scales[row].item() == float(expected_scale)
    levels = 2 ** (bits - 1) - 1
    assert int(codes.abs().max()) == levels  # clip at 0.7*max saturates some codes


def test_std_rule_clips_at_k_std_per_row():
    weight = heavy_tailed(12, 200)
    for k in (2.5, 12.5):
        clip = row_clip(weight, 6, parse_clip_rule(f"std:{k}"))
        expected = torch.tensor([k * float(np.std(row.numpy())) for row in weight])
        torch.testing.assert_close(clip, expected, rtol=1e-5, atol=0)


def test_fixed_percentile_matches_torch_quantile():
    weight = heavy_tailed(10, 333)
    for q in (0.5, 0.999, 0.9999984, 1.0):
        clip = row_clip(weight, 8, ClipRule("percentile", q))
        expected = torch.quantile(weight.abs(), q, dim=1)
        assert torch.equal(clip, expected), q


@pytest.mark.parametrize("bits", [4, 6])
def test_percentile_search_picks_mse_best_candidate_per_row(bits):
    weight = heavy_tailed(40, 1000, seed=bits)

    def candidates(row):
        return [float(torch.quantile(row.abs(), q)) if q < 1.0 else float(row.abs().max()) for q in SEED_PERCENTILES]

    expected = reference_search(weight, bits, candidates)
    clip = row_clip(weight, bits, parse_clip_rule("percentile"))
    assert torch.equal(clip, expected)
    # The test only means something if rows really choose differently.
    assert len({round(float(value / row.abs().max()), 6) for value, row in zip(clip, weight, strict=True)}) > 1
    assert torch.equal(quantize_with_clip(weight, bits, clip)[0], quantize_with_clip(weight, bits, expected)[0])


def test_mse_search_picks_best_std_multiple_or_max_per_row():
    bits = 4
    weight = heavy_tailed(30, 400, seed=3)

    def candidates(row):
        std = float(np.std(row.numpy()))
        return [k * std for k in MSE_STD_MULTIPLES] + [float(row.abs().max())]

    expected = reference_search(weight, bits, candidates)
    clip = row_clip(weight, bits, parse_clip_rule("mse"))
    torch.testing.assert_close(clip, expected, rtol=1e-5, atol=0)
    # Its per-row error is no worse than any single std rule or plain max.
    error = (weight - dequantize(*quantize_with_clip(weight, bits, clip))).pow(2).mean(dim=1)
    for rule in (f"std:{MSE_STD_MULTIPLES[1]}", f"std:{MSE_STD_MULTIPLES[4]}", "percentile:1.0"):
        other = row_clip(weight, bits, parse_clip_rule(rule))
        other_error = (weight - dequantize(*quantize_with_clip(weight, bits, other))).pow(2).mean(dim=1)
        assert bool((error <= other_error * (1 + 1e-6)).all())


@pytest.mark.parametrize("rule", ["percentile", "percentile:0.9999984", "std:12.5", "mse"])
def test_all_zero_rows_get_zero_scale_and_codes(rule):
    weight = heavy_tailed(6, 64)
    weight[2] = 0.0
    weight[5] = 0.0
    clip = row_clip(weight, 6, parse_clip_rule(rule))
    codes, scales = quantize_with_clip(weight, 6, clip)
    assert clip[2] == 0 and clip[5] == 0
    assert scales[2] == 0 and scales[5] == 0
    assert not codes[2].any() and not codes[5].any()
    assert torch.isfinite(dequantize(codes, scales)).all()
    assert bool((scales[[0, 1, 3, 4]] > 0).all())


@pytest.mark.parametrize("rule", ["percentile", "std:12.5", "mse", "percentile:1.0"])
def test_small_magnitude_rows_keep_precision(rule):
    # The same row at magnitudes 1 .. 1e-4 must keep the same relative error. A floor of
    # the scale at 1/levels (as in the public baseline's int8) would round the small rows
    # to all-zero codes, a relative error of 1.
    bits = 6
    base = heavy_tailed(1, 256, seed=7)[0]
    base = base / base.abs().max()
    weight = torch.stack([base * magnitude for magnitude in (1.0, 1e-2, 1e-3, 1e-4)])
    codes, scales = quantize_with_clip(weight, bits, row_clip(weight, bits, parse_clip_rule(rule)))
    relative = (weight - dequantize(codes, scales)).norm(dim=1) / weight.norm(dim=1)
    assert float(relative[0]) < 0.2
    torch.testing.assert_close(relative[1:], relative[0].expand(3), rtol=0.1, atol=0)


def test_nonzero_row_below_fp16_range_never_gets_scale_zero():
    weight = torch.full((2, 8), 1e-9)
    weight[1] = 0.0
    clip = row_clip(weight, 4, parse_clip_rule("percentile:1.0"))
    _, scales = quantize_with_clip(weight, 4, clip)
    assert scales[0].item() == SMALLEST_FP16 and scales[1].item() == 0.0


def test_nonzero_row_whose_rule_gives_zero_falls_back_to_max():
    weight = torch.zeros(2, 1000)
    weight[0, 7] = 0.3  # the 0.999 percentile of this row is 0
    weight[1] = 0.25  # constant row: std 0
    assert row_clip(weight, 6, parse_clip_rule("percentile:0.5")).tolist() == pytest.approx([0.3, 0.25])
    assert row_clip(weight, 6, parse_clip_rule("std:12.5"))[1].item() == pytest.approx(0.25)


@pytest.mark.parametrize("text", ["percentile", "percentile:0.9999984", "std:12.5", "mse", "percentile:1.0"])
def test_parse_and_serialise_round_trip(text):
    rule = parse_clip_rule(text)
    assert str(rule) == text
    assert rule.to_string() == text
    assert parse_clip_rule(str(rule)) == rule


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(["std", "percentile"]),
    value=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False, allow_infinity=False),
)
def test_parse_round_trip_for_any_value(kind, value):
    rule = ClipRule(kind, value)
    assert parse_clip_rule(str(rule)) == rule


@pytest.mark.parametrize(
    "text", ["", "median", "std", "std:0", "std:-1", "std:abc", "percentile:0", "percentile:1.5", "mse:3"]
)
def test_bad_rules_raise_input_error(text):
    with pytest.raises(InputError, match="clip rule"):
        parse_clip_rule(text)


def test_bad_bits_and_shapes_raise_input_error():
    with pytest.raises(InputError, match="bits=9"):
        row_clip(torch.ones(2, 2), 9, parse_clip_rule("mse"))
    with pytest.raises(InputError, match="2-D"):
        row_clip(torch.ones(2, 2, 2), 6, parse_clip_rule("mse"))
