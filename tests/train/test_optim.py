"""Muon's Newton-Schulz orthogonalisation, Muon steps, and the schedules."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from train.config import preset_config
from train.optim import Muon, lr_multiplier, muon_momentum, newton_schulz, training_progress, warmdown_factor


def test_newton_schulz_output_is_near_orthogonal_for_every_bank_slice():
    torch.manual_seed(0)
    # badly conditioned input: singular values spread over two orders of magnitude
    u, _ = torch.linalg.qr(torch.randn(3, 64, 64))
    v, _ = torch.linalg.qr(torch.randn(3, 32, 32))
    singular = torch.logspace(0, -2, 32)
    grad = u[:, :, :32] @ torch.diag(singular) @ v.mT  # [3, 64, 32], tall
    out = newton_schulz(grad, steps=5)
    assert out.shape == grad.shape
    values = torch.linalg.svdvals(out)
    # the quintic's fixed band: every singular value lands in ~[0.68, 1.15]
    assert values.min() > 0.6 and values.max() < 1.25
    assert torch.linalg.svdvals(grad).min() < 0.02  # while the input's did not
    wide = newton_schulz(torch.randn(4, 48, 96))
    assert torch.linalg.svdvals(wide).min() > 0.6 and torch.linalg.svdvals(wide).max() < 1.25
    # singular vectors are kept: out is aligned with U V^T
    reference = u[:, :, :32] @ v.mT
    cosine = (out * reference).sum() / (out.norm() * reference.norm())
    assert cosine > 0.9


def test_muon_step_moves_against_the_gradient_with_decoupled_weight_decay():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(2, 8, 8))
    start = param.detach().clone()
    optimizer = Muon([param], lr=0.1, momentum=0.0, weight_decay=0.5, nesterov=False)
    param.grad = torch.randn(2, 8, 8)
    optimizer.step()
    expected = start * (1 - 0.1 * 0.5) - 0.1 * newton_schulz(param.grad)
    assert torch.allclose(param.detach(), expected, atol=1e-5)
    assert (param.detach() - start * 0.95).mul(param.grad).sum() < 0


def seed_lr_mul(step: int, elapsed_ms: float, iterations: int, warmup: int, warmdown: int,
                max_wall_ms: float | None) -> float:
    """The seed's `lr_mul`, transcribed from its train_gpt.py as the reference."""
    wu = min(step / max(warmup, 1), 1.0)
    if warmdown <= 0:
        return wu
    if max_wall_ms is None:
        start = max(iterations - warmdown, 0)
        return wu * (0.5 * (1 + math.cos(math.pi * (step - start) / max(warmdown, 1))) if step >= start else 1.0)
    step_ms = elapsed_ms / max(step, 1)
    window_ms = warmdown * step_ms
    remaining_ms = max(max_wall_ms - elapsed_ms, 0)
    return wu * (0.5 * (1 + math.cos(math.pi * (1 - remaining_ms / max(window_ms, 1e-9))))
                 if remaining_ms <= window_ms else 1.0)


def test_lr_schedule_is_the_seeds_warmup_and_step_or_clock_warmdown():
    config = replace(preset_config("seed11"), iterations=5000, max_wall_s=0.0)
    assert (config.warmup_steps, config.warmdown_steps) == (200, 1000)
    for step in (0, 1, 100, 199, 200, 3999, 4000, 4500, 4999, 5000):
        assert lr_multiplier(step, 0.0, config) == pytest.approx(seed_lr_mul(step, 0, 5000, 200, 1000, None))
    assert lr_multiplier(0, 0.0, config) == 0.0  # the seed's first step has LR 0
    # with the 1,800 s cap: the last 1,000 steps' worth of time at the average step time
    config = preset_config("seed11")
    for step, elapsed_s in ((10, 3.1), (5000, 1500.0), (5200, 1560.0), (5600, 1710.0), (5750, 1799.9)):
        expected = seed_lr_mul(step, elapsed_s * 1000, 200_000, 200, 1000, 1_800_000.0)
        assert lr_multiplier(step, elapsed_s, config) == pytest.approx(expected, abs=1e-12)
    assert lr_multiplier(5000, 1500.0, config) == 1.0 and lr_multiplier(5600, 1710.0, config) < 0.5


def test_fraction_warmdown_follows_steps_or_the_clock_whichever_is_further():
    config = replace(preset_config("tiny"), iterations=100, warmup_steps=10, warmdown_frac=0.3, max_wall_s=0.0)
    assert config.warmdown_steps == 0
    assert lr_multiplier(5, 0.0, config) == 0.5
    assert lr_multiplier(50, 0.0, config) == 1.0
    assert 0.4 < warmdown_factor(85, 0.0, config) < 0.6
    assert warmdown_factor(100, 0.0, config) < 1e-9
    config = replace(config, max_wall_s=10.0)
    assert training_progress(10, 9.0, config) == 0.9
    assert warmdown_factor(10, 8.5, config) == pytest.approx(0.5)


def test_muon_momentum_warms_up_linearly():
    config = replace(preset_config("tiny"), muon_momentum_start=0.92, muon_momentum=0.99,
                     muon_momentum_warmup_steps=10)
    assert muon_momentum(0, config) == 0.92
    assert abs(muon_momentum(5, config) - 0.955) < 1e-12
    assert muon_momentum(50, config) == 0.99


def test_muon_uses_the_seeds_sum_momentum_and_nesterov_form():
    """buffer <- m * buffer + g; update = NS(g + m * buffer), as the seed's Muon."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.zeros(1, 8, 8))
    optimizer = Muon([param], lr=0.1, momentum=0.9)
    grads = [torch.randn(1, 8, 8) for _ in range(3)]
    buffer = torch.zeros(1, 8, 8)
    expected = torch.zeros(1, 8, 8)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        buffer = 0.9 * buffer + grad
        expected = expected - 0.1 * newton_schulz(grad + 0.9 * buffer)
    assert torch.allclose(param.detach(), expected, atol=1e-5)
    assert torch.allclose(optimizer.state[param]["momentum_buffer"], buffer, atol=1e-6)
