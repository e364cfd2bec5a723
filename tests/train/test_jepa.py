"""JEPA: EMA math, VICReg terms, and the vanilla baseline never touching the target encoder."""

from __future__ import annotations

import json

import pytest
import torch

import train.jepa
from train.jepa import JepaObjective, ema_update, vicreg_terms
from train.loop import run_training
from train.model import GPT, ModelConfig
from train.testing import micro_config


def test_ema_update_math():
    target = {"w": torch.tensor([1.0, 2.0, -4.0])}
    source = {"w": torch.tensor([3.0, 0.0, 4.0])}
    ema_update(target, source, decay=0.75)
    assert torch.allclose(target["w"], torch.tensor([1.5, 1.5, -2.0]))
    ema_update(target, source, decay=0.0)
    assert torch.equal(target["w"], source["w"])


def test_target_banks_start_as_copies_and_follow_the_ema():
    torch.manual_seed(0)
    model = GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, xsa_last_n=1))
    jepa = JepaObjective(model, latent_dim=16, ema_decay=0.9)
    assert torch.equal(jepa.target_qo_bank, model.qo_bank.detach())
    before = jepa.target_mlp_up_bank.clone()
    with torch.no_grad():
        model.mlp_up_bank.add_(1.0)
    jepa.update_target(model)
    assert torch.allclose(jepa.target_mlp_up_bank, 0.9 * before + 0.1 * model.mlp_up_bank.detach(), atol=1e-6)
    assert {name for name, _ in jepa.named_buffers()} == {f"target_{n}" for n in GPT.bank_names}


def test_vicreg_terms_flag_collapse_and_correlation():
    torch.manual_seed(0)
    spread = torch.randn(4096, 8) * 2.0
    variance, covariance, std = vicreg_terms(spread)
    assert variance.item() == 0.0 and covariance.item() < 0.05 and std.min() > 1.5
    collapsed = torch.zeros(4096, 8) + 0.01 * torch.randn(4096, 1)
    variance, covariance, std = vicreg_terms(collapsed)
    assert variance.item() > 0.95 and std.max() < 0.05
    base = torch.randn(4096, 1)
    correlated = base.repeat(1, 8)
    assert vicreg_terms(correlated)[1].item() > 5.0


def test_jepa_weight_zero_never_builds_or_runs_the_target_encoder(tmp_path, prepared, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the vanilla baseline touched the JEPA objective")

    monkeypatch.setattr(train.jepa.JepaObjective, "__init__", refuse)
    monkeypatch.setattr(train.jepa.JepaObjective, "forward", refuse)
    monkeypatch.setattr(train.jepa.JepaObjective, "update_target", refuse)
    monkeypatch.setattr(GPT, "hidden_states", _counting_hidden_states(calls := []))
    result = run_training(micro_config(tmp_path / "run", prepared, iterations=2, jepa_weight=0.0),
                          console=lambda text: None)
    # one context pass per step and never a target-encoder pass (banks= overridden)
    assert calls == [False, False]
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert not any("jepa_loss" in row for row in rows)
    assert result.step == 2
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["jepa"] is None


def test_jepa_run_logs_the_latent_statistics(tmp_path, prepared):
    run_training(micro_config(tmp_path / "run", prepared, iterations=2, jepa_weight=0.3), console=lambda text: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    step_rows = [row for row in rows if not row.get("final")]
    assert [row["step"] for row in step_rows] == [1, 2]
    for row in step_rows:
        for key in ("loss", "elapsed_s", "jepa_loss", "vicreg_loss", "z_std_mean", "z_std_min"):
            assert isinstance(row[key], float), key
        assert row["z_std_min"] <= row["z_std_mean"]
    assert rows[-1]["final"] and "val_bpb" in rows[-1] and "val_loss" in rows[-1]


def _counting_hidden_states(calls: list):
    original = GPT.hidden_states

    def wrapper(self, input_ids, banks=None):
        if torch.is_grad_enabled():
            calls.append(banks is not None)
        return original(self, input_ids, banks)

    return wrapper


def test_jepa_weight_ramps_up_with_the_lr_warmup_and_anneals_with_the_warmdown(tmp_path, prepared):
    """The seed multiplies the JEPA weight by its whole LR multiplier: 0 at step 0, a
    linear ramp over the warm-up, then the cosine warm-down to 0."""
    run_training(micro_config(tmp_path / "run", prepared, iterations=6, jepa_weight=0.3, warmdown_frac=0.5),
                 console=lambda text: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if not row.get("final")]
    weights = [row["jepa_weight"] for row in steps]
    assert weights == pytest.approx([0.3 * row["lr_mult"] for row in steps])
    assert weights[:3] == pytest.approx([0.0, 0.15, 0.3])  # ramp: step / warmup_steps (2), 0 first
    assert weights[4] < 0.3 and weights[5] < weights[4]  # anneal


def test_vicreg_weight_stays_1_while_the_jepa_weight_ramps_and_anneals(tmp_path, prepared):
    """The seed adds VICReg at weight 1 on every step; only the JEPA term is scheduled."""
    run_training(micro_config(tmp_path / "run", prepared, iterations=6, jepa_weight=0.3, warmdown_frac=0.5),
                 console=lambda text: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if not row.get("final")]
    assert {row["jepa_weight"] for row in steps} != {0.3}  # the JEPA weight did move
    for row in steps:
        expected = row["loss"] + row["jepa_weight"] * row["jepa_loss"] + 1.0 * row["vicreg_loss"]
        assert row["total_loss"] == pytest.approx(expected, rel=1e-6)
        assert row["vicreg_loss"] > 0


def test_stop_gradient_jepa_loss_gives_tgt_proj_no_gradient():
    torch.manual_seed(0)
    model = GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, xsa_last_n=1))
    with torch.no_grad():
        for bank in model.banks().values():
            bank.normal_(std=0.2)
    jepa = JepaObjective(model, latent_dim=16)
    ids = torch.randint(0, 1024, (2, 32))
    parts = jepa(model, ids, model.hidden_states(ids))
    parts["jepa_loss"].backward(retain_graph=True)
    assert jepa.tgt_proj.weight.grad is None  # the target side is detached from the MSE
    assert jepa.ctx_proj.weight.grad.abs().max() > 0 and jepa.predictor[0].weight.grad.abs().max() > 0
    assert model.qo_bank.grad.abs().max() > 0  # the context encoder learns from it
    parts["vicreg_loss"].backward()
    assert jepa.tgt_proj.weight.grad.abs().max() > 0  # while VICReg trains tgt_proj, as in the seed
    assert jepa.target_qo_bank.grad is None


def test_jepa_heads_have_the_seeds_shapes_init_and_393216_parameters():
    torch.manual_seed(0)
    model = GPT(ModelConfig(num_layers=1, model_dim=512, xsa_last_n=0))
    jepa = JepaObjective(model, latent_dim=256)
    shapes = {name: tuple(p.shape) for name, p in jepa.named_parameters()}
    assert shapes == {"predictor.0.weight": (256, 256), "predictor.2.weight": (256, 256),
                      "ctx_proj.weight": (256, 512), "tgt_proj.weight": (256, 512)}  # no biases
    assert isinstance(jepa.predictor[1], torch.nn.GELU)
    assert sum(p.numel() for p in jepa.parameters()) == 393_216
    for layer in (jepa.predictor[0], jepa.predictor[2]):
        assert abs(layer.weight.std().item() - 0.02) < 0.001 and abs(layer.weight.mean().item()) < 0.001
    for projection in (jepa.ctx_proj, jepa.tgt_proj):  # orthogonal rows
        gram = projection.weight @ projection.weight.T
        assert torch.allclose(gram, torch.eye(256), atol=1e-4)
