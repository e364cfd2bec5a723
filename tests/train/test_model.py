"""The context encoder: contract names and shapes, forward/loss shapes, F.linear use."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from train.jepa import JepaObjective
from train.model import GPT, VERSION_1_VALUES, ModelConfig, Rotary, build_model, rms_norm

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


def _random_banks(model: GPT, std: float = 0.2) -> GPT:
    with torch.no_grad():
        for bank in model.banks().values():
            bank.normal_(std=std)
        model.skip_w.normal_(mean=1.0, std=0.5)
    return model


def test_skip_placement_after_block_is_the_seeds_and_before_block_is_modded_nanogpts():
    """The seed adds U-Net skip j to the OUTPUT of decoder block E+j; modded-nanogpt adds it
    to that block's INPUT (the project's model did, until the seed-faithful version)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 1024, (2, 16))
    results = {}
    for placement in ("after_block", "before_block"):
        config = ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, xsa_last_n=1,
                             skip_placement=placement)
        torch.manual_seed(1)
        model = _random_banks(GPT(config))
        with torch.no_grad():
            x0 = model.embed(ids)
            rope = model.rotary(ids.size(1), ids.device)
            first = model.block_forward(model.blocks[0], x0, x0, model.banks(), rope)
            skip = model.skip_w[0] * first
            if placement == "after_block":
                expected = model.block_forward(model.blocks[1], first, x0, model.banks(), rope) + skip
            else:
                expected = model.block_forward(model.blocks[1], first + skip, x0, model.banks(), rope)
            results[placement] = model.hidden_states(ids)
            assert torch.allclose(results[placement], rms_norm(expected), atol=1e-5), placement
    assert ModelConfig().skip_placement == "after_block"
    assert not torch.allclose(results["after_block"], results["before_block"], atol=1e-3)


def test_seed_rope_at_2048_when_the_fix_is_off_and_standard_rope_when_on():
    standard = 1.0 / (10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    seed = Rotary(16, 10000.0, fix_long_context=False)
    fixed = Rotary(16, 10000.0, fix_long_context=True)
    assert torch.equal(seed.frequencies(1024, torch.device("cpu")), standard)  # up to 1024 both are standard
    assert torch.equal(fixed.frequencies(2048, torch.device("cpu")), standard)
    collapsed = seed.frequencies(2048, torch.device("cpu"))
    # the seed's expression, operator precedence and all: ~5e-5 rad/token for every pair
    exponents = torch.arange(0, 16, 2, dtype=torch.float32) / 16
    assert torch.equal(collapsed, 1.0 / (10000.0 * (2048 / 1024) ** (16 / 14) ** exponents))
    assert collapsed.max() < 5.1e-5 and collapsed.min() > 4.5e-5
    assert standard[0] == 1.0  # while standard RoPE turns its first pair a full radian per token
    assert ModelConfig().rope_fix_long_context is False
    # and the model uses it: the 2048-token logits differ only through the option
    torch.manual_seed(0)
    ids = torch.randint(0, 1024, (1, 2048))
    outputs = {}
    for fix in (False, True):
        torch.manual_seed(1)
        model = _random_banks(GPT(ModelConfig(num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1,
                                              xsa_last_n=0, rope_fix_long_context=fix)))
        with torch.no_grad():
            outputs[fix] = (model(ids[:, :1024]), model(ids))
    assert torch.equal(outputs[False][0], outputs[True][0])
    assert not torch.allclose(outputs[False][1], outputs[True][1], atol=1e-3)


def test_bigram_gradients_are_zero_when_faithful_and_flow_with_the_fix():
    """The seed starts BigramHash's table and projection at zero: each one's gradient is
    the other times the upstream gradient, so both stay zero forever (a dead feature)."""
    ids = torch.randint(0, 1024, (2, 32))
    for fix in (False, True):
        torch.manual_seed(0)
        model = _random_banks(GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1,
                                              xsa_last_n=1, bigram_fix_init=fix)))
        with torch.no_grad():
            model.tok_emb.weight.normal_(std=0.5)
        model.cross_entropy(model.hidden_states(ids), torch.roll(ids, -1, 1)).backward()
        bigram = model.bigram
        grads = [bigram.emb.weight.grad, bigram.proj.weight.grad, bigram.scale.grad]
        if fix:
            assert bigram.emb.weight.grad.abs().max() > 0 and model.bigram.proj.weight.abs().max() > 0
        else:
            assert all(torch.count_nonzero(grad) == 0 for grad in grads)
            assert torch.count_nonzero(model.bigram.proj.weight) == 0
        assert model.tok_emb.weight.grad.abs().max() > 0  # the rest of the model learns either way
    assert ModelConfig().bigram_fix_init is False


def test_config_records_every_option_and_old_configs_rebuild_as_they_were_trained():
    config = ModelConfig(skip_placement="before_block", rope_fix_long_context=True)
    recorded = config.to_dict()
    assert set(recorded) == {f.name for f in fields(ModelConfig)}
    assert ModelConfig.from_dict(recorded) == config
    # a dict without config_version predates the seed-faithful options
    version_1 = {key: value for key, value in ModelConfig().to_dict().items() if key not in VERSION_1_VALUES
                 and key != "config_version"}
    rebuilt = build_model(version_1)
    assert rebuilt.config.skip_placement == "before_block"
    assert rebuilt.config.rope_fix_long_context and rebuilt.config.bigram_fix_init
    assert build_model(ModelConfig().to_dict()).config.skip_placement == "after_block"
    with pytest.raises(ValueError, match="skip_placement"):
        ModelConfig(skip_placement="middle")
