"""The context encoder: contract names and shapes, forward/loss shapes, F.linear use."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.jepa import JepaObjective
from train.model import GPT, ModelConfig, build_model

SMALL = ModelConfig(num_layers=4, model_dim=64, num_heads=2, num_kv_heads=1, xsa_last_n=2)


def small_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(SMALL)


def test_state_dict_names_and_shapes_match_the_classifier_contract():
    config = ModelConfig(num_layers=3, model_dim=128, num_heads=4, num_kv_heads=2, xsa_last_n=1)
    state = build_model(config.to_dict()).state_dict()
    layers, d, kv, hidden = 3, 128, 64, 384
    assert state["qo_bank"].shape == (2 * layers, d, d)
    assert state["kv_bank"].shape == (2 * layers, kv, d)
    assert state["mlp_up_bank"].shape == (layers, hidden, d)
    assert state["mlp_down_bank"].shape == (layers, d, hidden)
    assert state["tok_emb.weight"].shape == (1024, d)
    assert state["bigram.emb.weight"].shape == (2048, 128)
    assert state["bigram.proj.weight"].shape == (d, 128)
    assert state["bigram.scale"].numel() == 1
    assert state["smear.gate"].shape == (d,)
    assert state["skip_w"].shape[-1] == d
    for i in range(layers):
        assert state[f"blocks.{i}.attn.qg"].shape == (4,)
        for name in ("as_", "ms", "rm"):
            assert f"blocks.{i}.{name}" in state
    assert not any("lm_head" in name for name in state), "the head is tied to tok_emb"
    expected = {"qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank", "tok_emb.weight", "bigram.emb.weight",
                "bigram.proj.weight", "bigram.scale", "smear.gate", "skip_w"}
    assert {n for n in state if not n.startswith("blocks.")} == expected


def test_init_banks_orthogonal_and_output_projections_zero():
    model = small_model()
    layers = SMALL.num_layers
    q = model.qo_bank[0].detach()
    assert torch.allclose(q @ q.T, torch.eye(q.shape[0]), atol=1e-4)
    assert torch.count_nonzero(model.qo_bank[layers:]) == 0
    assert torch.count_nonzero(model.mlp_down_bank) == 0


def test_forward_shapes_softcap_and_finite_losses_for_both_objectives():
    model = small_model()
    with torch.no_grad():  # leave the zero init so the logits are not trivially tiny
        for bank in model.banks().values():
            bank.normal_(std=0.2)
        model.tok_emb.weight.normal_(std=2.0)
    ids = torch.randint(0, 1024, (3, 32))
    logits = model(ids)
    assert logits.shape == (3, 32, 1024) and logits.dtype == torch.float32
    assert logits.abs().max() <= SMALL.logit_softcap
    hidden = model.hidden_states(ids)
    ce = model.cross_entropy(hidden, torch.roll(ids, -1, 1))
    assert math.isfinite(ce.item())
    jepa = JepaObjective(model, latent_dim=16)
    parts = jepa(model, ids, hidden)
    assert set(parts) == {"jepa_loss", "vicreg_loss", "z_std_mean", "z_std_min"}
    assert all(math.isfinite(v.item()) for v in parts.values())
    (ce + 0.3 * (parts["jepa_loss"] + parts["vicreg_loss"])).backward()
    assert model.qo_bank.grad is not None and torch.isfinite(model.qo_bank.grad).all()
    assert jepa.predictor[0].weight.grad is not None
    assert jepa.target_qo_bank.grad is None  # the target encoder gets no gradient


def test_initial_loss_is_uniform_over_the_vocabulary():
    model = small_model()
    ids = torch.randint(0, 1024, (2, 16))
    targets = torch.randint(0, 1024, (2, 16))
    loss = model.cross_entropy(model.hidden_states(ids), targets)
    assert abs(loss.item() - math.log(1024)) < 0.05


def test_causal_future_tokens_do_not_change_past_logits():
    model = small_model()
    with torch.no_grad():
        for bank in model.banks().values():
            bank.normal_(std=0.2)
    ids = torch.randint(0, 1024, (1, 24))
    changed = ids.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % 1024
    assert torch.allclose(model(ids)[0, :12], model(changed)[0, :12], atol=1e-5)
    assert not torch.allclose(model(ids)[0, 12:], model(changed)[0, 12:], atol=1e-5)


def test_every_weight_matmul_goes_through_functional_linear(monkeypatch):
    model = small_model()
    calls: list[tuple[int, ...]] = []
    original = F.linear

    def counting(x, weight, bias=None):
        calls.append(tuple(weight.shape))
        return original(x, weight, bias)

    monkeypatch.setattr(F, "linear", counting)
    model(torch.randint(0, 1024, (1, 8)))
    layers = SMALL.num_layers
    # per layer: q, k, v, out, up, down; plus the bigram projection and the tied head
    assert len(calls) == 6 * layers + 2
    assert calls.count(tuple(model.tok_emb.weight.shape)) == 1


def test_build_model_rejects_unknown_config_keys():
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({"num_layers": 2, "not_a_field": 1})
    with pytest.raises(ValueError, match="num_kv_heads"):
        build_model({"num_heads": 4, "num_kv_heads": 3})
