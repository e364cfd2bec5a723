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


@pytest.mark.parametrize("weight", [0.3])
def test_jepa_weight_anneals_to_zero_with_the_warmdown(tmp_path, prepared, weight):
    run_training(micro_config(tmp_path / "run", prepared, iterations=6, jepa_weight=weight, warmdown_frac=0.5),
                 console=lambda text: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    weights = [row["jepa_weight"] for row in rows if not row.get("final")]
    assert weights[:4] == [weight] * 4  # progress <= 0.5 before step 4
    assert weights[4] < weight and weights[5] < weights[4]
