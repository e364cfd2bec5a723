"""Muon's Newton-Schulz orthogonalisation, Muon steps, and the schedules."""

from __future__ import annotations

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


def test_schedules_warm_up_and_warm_down():
    config = preset_config("tiny")
    config.iterations, config.warmup_steps, config.warmdown_frac, config.max_wall_s = 100, 10, 0.3, 0
    assert lr_multiplier(0, 0.0, config) == 0.1
    assert lr_multiplier(9, 0.09, config) == 1.0
    assert lr_multiplier(50, 0.5, config) == 1.0
    assert 0.4 < warmdown_factor(0.85, config) < 0.6
    assert warmdown_factor(1.0, config) < 1e-9
    # wall clock drives progress when it is further along than the step count
    config.max_wall_s = 10.0
    assert training_progress(10, 9.0, config) == 0.9
    config.muon_momentum_start, config.muon_momentum, config.muon_momentum_warmup_steps = 0.92, 0.99, 10
    assert muon_momentum(0, config) == 0.92
    assert abs(muon_momentum(5, config) - 0.955) < 1e-12
    assert muon_momentum(50, config) == 0.99
