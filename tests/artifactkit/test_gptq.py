"""GPTQ and the Hessian collector, on a tiny byte-level language model trained here on
real text (tinyshakespeare) so the calibration activations have real correlations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from artifactkit.errors import InputError
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.clip_rules import MSE_STD_MULTIPLES, SEED_PERCENTILES, ClipRule, parse_clip_rule
from artifactkit.quantize.gptq import (
    HessianCollector,
    clip_candidates,
    collect_hessians,
    gptq_quantize,
    gptq_state_dict,
    prepare_hessian,
)
from artifactkit.quantize.intn import dequantize, quantize_with_clip, row_clip

CONTEXT = 8
EMBED = 16
HIDDEN = 192
VOCAB = 256


class ByteMLP(nn.Module):
    """Next byte from the previous CONTEXT bytes: embed, concat, MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.up = nn.Linear(CONTEXT * EMBED, HIDDEN)
        self.down = nn.Linear(HIDDEN, VOCAB)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.up(self.embed(context).flatten(1)))
        return self.down(hidden)


def windows(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    index = starts[:, None] + torch.arange(CONTEXT)
    return data[index], data[starts + CONTEXT]


_TRAINED: dict[str, object] = {}


@pytest.fixture
def trained(corpus_text):
    """(model, calibration contexts, held-out contexts), trained once per session."""
    if not _TRAINED:
        # Tiny matrices: one thread is faster, and immune to busy-waiting when the
        # machine's cores are shared.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _TRAINED.update(train_byte_model(corpus_text))
        finally:
            torch.set_num_threads(threads)
    assert _TRAINED["loss"] < 3.0  # it learned something (uniform bytes: ln 256 = 5.5)
    return _TRAINED["model"], _TRAINED["calibration"], _TRAINED["evaluation"]


def train_byte_model(text: str) -> dict[str, object]:
    """Train ByteMLP for 300 Adam steps on the first 90% of the text."""
    torch.manual_seed(0)
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    split = int(len(data) * 0.9)
    train, held_out = data[:split], data[split:]
    model = ByteMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        starts = torch.randint(0, len(train) - CONTEXT - 1, (256,), generator=generator)
        inputs, targets = windows(train, starts)
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    calibration = windows(train, torch.randint(0, len(train) - CONTEXT - 1, (4096,), generator=generator))[0]
    evaluation = windows(held_out, torch.randint(0, len(held_out) - CONTEXT - 1, (4096,), generator=generator))[0]
    return {"model": model.eval(), "calibration": calibration, "evaluation": evaluation,
            "loss": float(loss.detach())}


def layer_inputs(model: ByteMLP, contexts: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        up_input = model.embed(contexts).flatten(1)
        down_input = F.gelu(model.up(up_input))
    return {"up.weight": up_input, "down.weight": down_input}


def output_error(inputs: torch.Tensor, weight: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> float:
    """||X W^T - X What^T|| / ||X W^T||."""
    reference = inputs @ weight.T
    return float((reference - inputs @ dequantize(codes, scales).T).norm() / reference.norm())


def rtn(weight: torch.Tensor, bits: int, rule) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_with_clip(weight, bits, row_clip(weight, bits, rule))


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("rule", ["percentile", "std:12.5", "mse"])
def test_identity_hessian_equals_round_to_nearest(bits, rule):
    torch.manual_seed(bits)
    weight = torch.randn(48, 80) * torch.logspace(-4, 0, 48)[:, None]
    weight[5] = 0.0
    clip = parse_clip_rule(rule)
    codes, scales = gptq_quantize(weight, torch.eye(80), bits, clip, block_size=32)
    expected_codes, expected_scales = rtn(weight, bits, clip)
    assert torch.equal(codes, expected_codes)
    assert torch.equal(scales, expected_scales)


def test_diagonal_hessian_with_act_order_and_dead_columns_equals_round_to_nearest():
    # A diagonal Hessian has no correlations to exploit, so GPTQ must not move any
    # rounding decision; act-order permutes by the (varied) diagonal and must un-permute
    # the codes; dead columns (zero diagonal) keep their round-to-nearest codes.
    torch.manual_seed(1)
    weight = torch.randn(32, 64)
    diagonal = torch.rand(64) + 0.1
    diagonal[[3, 40]] = 0.0
    clip = parse_clip_rule("percentile")
    expected_codes, _ = rtn(weight, 4, clip)
    for act_order in (False, True):
        codes, _ = gptq_quantize(weight, torch.diag(diagonal), 4, clip, block_size=16, act_order=act_order)
        assert torch.equal(codes, expected_codes), act_order
    assert expected_codes[:, [3, 40]].any()


@pytest.mark.parametrize("bits", [3, 4, 6])
@pytest.mark.parametrize("layer", ["up.weight", "down.weight"])
def test_gptq_beats_round_to_nearest_on_real_activations(trained, bits, layer):
    model, calibration, evaluation = trained
    if "hessians" not in _TRAINED:
        _TRAINED["hessians"] = collect_hessians(model, calibration.split(1024), "cpu")
    hessians = _TRAINED["hessians"]
    weight = dict(model.named_parameters())[layer].detach()
    clip = parse_clip_rule("percentile")
    rtn_codes, rtn_scales = rtn(weight, bits, clip)
    gptq_codes, gptq_scales = gptq_quantize(weight, hessians[layer], bits, clip, block_size=64)
    ordered_codes, ordered_scales = gptq_quantize(weight, hessians[layer], bits, clip, act_order=True)
    # Scales come from the clip rule on the original weights, same as round-to-nearest.
    assert torch.equal(gptq_scales, rtn_scales) and torch.equal(ordered_scales, rtn_scales)
    assert int(gptq_codes.abs().max()) <= 2 ** (bits - 1) - 1
    # Measured: 0.49-0.58x (down) and 0.78-0.86x (up) of round-to-nearest's error.
    for inputs in (layer_inputs(model, calibration)[layer], layer_inputs(model, evaluation)[layer]):
        baseline = output_error(inputs, weight, rtn_codes, rtn_scales)
        assert output_error(inputs, weight, gptq_codes, gptq_scales) < 0.9 * baseline
        assert output_error(inputs, weight, ordered_codes, ordered_scales) < 0.9 * baseline


def row_output_errors(weight: torch.Tensor, hessian: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor):
    """Per row, d H d^T with d = W - dequantized W."""
    difference = (weight - dequantize(codes, scales)).double()
    return ((difference @ hessian.double()) * difference).sum(dim=1)


@pytest.mark.parametrize("rule", ["percentile", "mse"])
def test_search_clip_with_identity_hessian_equals_round_to_nearest(rule):
    # With H = I, GPTQ is round-to-nearest and d H d^T is the row's squared error, so
    # the GPTQ search must pick the same per-row clip as the rule's own MSE search.
    torch.manual_seed(3)
    weight = torch.randn(40, 72) * torch.logspace(-3, 0, 40)[:, None]
    weight[7] = 0.0
    clip = parse_clip_rule(rule)
    codes, scales = gptq_quantize(weight, torch.eye(72), 4, clip, block_size=16, search_clip=True)
    expected_codes, expected_scales = rtn(weight, 4, clip)
    assert torch.equal(scales, expected_scales)
    assert torch.equal(codes, expected_codes)


def test_search_clip_with_a_fixed_rule_changes_nothing(trained):
    model, calibration, _ = trained
    hessian = collect_hessians(model, [calibration[:1024]], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    clip = parse_clip_rule("std:4")
    assert len(clip_candidates(weight, 4, clip)) == 1
    plain = gptq_quantize(weight, hessian, 4, clip)
    searched = gptq_quantize(weight, hessian, 4, clip, search_clip=True)
    assert torch.equal(plain[0], searched[0]) and torch.equal(plain[1], searched[1])


def candidate_rules(rule: str) -> list[ClipRule]:
    if rule == "percentile":
        return [ClipRule("percentile", quantile) for quantile in SEED_PERCENTILES]
    return [ClipRule("std", multiple) for multiple in MSE_STD_MULTIPLES] + [ClipRule("percentile", 1.0)]


@pytest.mark.parametrize("rule", ["percentile", "mse"])
@pytest.mark.parametrize("act_order", [False, True])
def test_search_clip_picks_per_row_the_least_gptq_output_error(trained, rule, act_order):
    model, calibration, evaluation = trained
    hessian = collect_hessians(model, [calibration], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    clip = parse_clip_rule(rule)
    codes, scales = gptq_quantize(weight, hessian, 3, clip, act_order=act_order, search_clip=True)
    searched = row_output_errors(weight, hessian, codes, scales)
    rules = candidate_rules(rule)
    candidates = clip_candidates(weight, 3, clip)
    assert len(candidates) == len(rules)
    per_candidate, candidate_scales = [], []
    for fixed, candidate in zip(rules, candidates, strict=True):
        assert torch.equal(candidate, row_clip(weight, 3, fixed))
        fixed_codes, fixed_scales = gptq_quantize(weight, hessian, 3, fixed, act_order=act_order)
        per_candidate.append(row_output_errors(weight, hessian, fixed_codes, fixed_scales))
        candidate_scales.append(fixed_scales)
    # Per row: the least error over the candidates, with one of the candidates' scales.
    assert torch.allclose(searched, torch.stack(per_candidate).min(dim=0).values, rtol=1e-4, atol=1e-12)
    assert bool((torch.stack(candidate_scales) == scales[None, :]).any(dim=0).all())
    # The rule's own choice (least weight MSE per row) is one candidate, so the search is
    # never worse per row; it differs in some rows and is better on held-out inputs.
    plain_codes, plain_scales = gptq_quantize(weight, hessian, 3, clip, act_order=act_order)
    assert not torch.equal(plain_scales, scales)
    assert bool((searched <= row_output_errors(weight, hessian, plain_codes, plain_scales) * (1 + 1e-5)).all())
    inputs = layer_inputs(model, evaluation)["down.weight"]
    assert output_error(inputs, weight, codes, scales) < output_error(inputs, weight, plain_codes, plain_scales)


@pytest.mark.parametrize("act_order", [False, True])
def test_a_prepared_hessian_gives_the_same_result_for_every_candidate(trained, act_order):
    model, calibration, _ = trained
    hessian = collect_hessians(model, [calibration], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    prepared = prepare_hessian(hessian, act_order=act_order)
    for bits, rule, search in [(3, "mse", True), (5, "percentile", True), (4, "std:4", False)]:
        clip = parse_clip_rule(rule)
        direct = gptq_quantize(weight, hessian, bits, clip, act_order=act_order, search_clip=search)
        reused = gptq_quantize(weight, prepared, bits, clip, act_order=act_order, search_clip=search)
        assert torch.equal(direct[0], reused[0]) and torch.equal(direct[1], reused[1])
    with pytest.raises(InputError, match="prepare it with the same options"):
        gptq_quantize(weight, prepared, 4, parse_clip_rule("mse"), act_order=not act_order)
    with pytest.raises(InputError, match="Hessian shape"):
        gptq_quantize(weight[:, :-1], prepared, 4, parse_clip_rule("mse"), act_order=act_order)


def test_the_clip_search_gives_the_same_result_in_any_number_of_passes(trained, monkeypatch):
    """Candidates are stacked into one GPTQ pass; split into chunks, nothing may change."""
    import artifactkit.quantize.gptq as gptq

    model, calibration, _ = trained
    hessian = collect_hessians(model, [calibration], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    clip = parse_clip_rule("mse")
    stacked = gptq_quantize(weight, hessian, 4, clip, act_order=True, search_clip=True)
    monkeypatch.setattr(gptq, "STACK_ELEMENTS", weight.numel() * 2)  # 2 candidates per pass
    chunked = gptq_quantize(weight, hessian, 4, clip, act_order=True, search_clip=True)
    monkeypatch.setattr(gptq, "STACK_ELEMENTS", 1)  # one candidate per pass
    single = gptq_quantize(weight, hessian, 4, clip, act_order=True, search_clip=True)
    for other in (chunked, single):
        assert torch.equal(stacked[0], other[0]) and torch.equal(stacked[1], other[1])


def test_block_size_does_not_change_the_result_much(trained):
    # Lazy blocked updates are an exact reordering of the column-by-column algorithm.
    model, calibration, _ = trained
    hessian = collect_hessians(model, [calibration], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    clip = parse_clip_rule("mse")
    one, _ = gptq_quantize(weight, hessian, 4, clip, block_size=1)
    blocked, _ = gptq_quantize(weight, hessian, 4, clip, block_size=64)
    assert (one != blocked).float().mean() < 0.01


class Banked(nn.Module):
    """Banked attention-like weights used through F.linear on bank slices, a cast copy,
    an nn.Linear, and a weight that is not a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Module()
        self.inner.qo_bank = nn.Parameter(torch.randn(4, 8, 8))  # 2 layers: Q0 Q1 O0 O1
        self.kv_bank = nn.Parameter(torch.randn(4, 4, 8))  # K0 K1 V0 V1
        self.mlp_up_bank = nn.Parameter(torch.randn(2, 6, 8))
        self.head = nn.Linear(8, 5, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        query = F.linear(x, self.inner.qo_bank[1])
        out = F.linear(query, self.inner.qo_bank[2])
        value = F.linear(x.to(torch.bfloat16), self.kv_bank[3].to(torch.bfloat16))
        up = F.linear(out, self.mlp_up_bank[1])
        logits = self.head(out)
        F.linear(x, torch.ones(3, 8))  # not a parameter: counted as unmatched
        assert value.shape[-1] == 4 and up.shape[-1] == 6 and logits.shape[-1] == 5
        return {"inner.b.1.a.q": x, "inner.b.0.a.o": query, "b.1.a.v": x.to(torch.bfloat16), "b.1.m.u": out,
                "head.weight": out}


def test_collector_names_bank_slices_casts_and_linear_layers():
    torch.manual_seed(0)
    model = Banked()
    seen: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), HessianCollector(model) as collector:
        for _ in range(2):
            inputs = model(torch.randn(3, 5, 8))
            for name, tensor in inputs.items():
                seen.setdefault(name, []).append(tensor.reshape(-1, 8).double())
    hessians = collector.hessians()
    assert set(hessians) == {"inner.b.1.a.q", "inner.b.0.a.o", "b.1.a.v", "b.1.m.u", "head.weight"}
    for name, hessian in hessians.items():
        stacked = torch.cat(seen[name])
        assert collector.counts[name] == 30
        torch.testing.assert_close(hessian, 2 * stacked.T @ stacked / 30)
        assert hessian.dtype == torch.float64
    assert collector.unmatched == {(3, 8): 2}


def test_collector_names_are_the_expanded_state_dict_names():
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Banked()

        def forward(self, x):
            return self.model(x)

    model = Outer()
    with torch.no_grad(), HessianCollector(model) as collector:
        model(torch.randn(2, 8))
    expanded, _ = expand_banks(model.state_dict())
    assert set(collector.hessians()) == {"model.inner.b.1.a.q", "model.inner.b.0.a.o", "model.b.1.a.v",
                                         "model.b.1.m.u", "model.head.weight"}
    assert set(collector.hessians()) <= set(expanded)


def test_gptq_state_dict_quantizes_only_tensors_with_hessian_and_bits(trained):
    model, calibration, _ = trained
    hessians = collect_hessians(model, [calibration[:512]], "cpu")
    assert set(hessians) == {"up.weight", "down.weight"}
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    clip = parse_clip_rule("percentile")
    result = gptq_state_dict(
        state,
        hessians,
        bits_for=lambda name: 5 if name == "down.weight" else None,
        clip_for=lambda name, bits: clip,
        block_size=32,
    )
    assert set(result) == {"down.weight"}
    codes, scales = gptq_quantize(state["down.weight"], hessians["down.weight"], 5, clip, block_size=32)
    assert torch.equal(result["down.weight"][0], codes) and torch.equal(result["down.weight"][1], scales)


def test_bad_inputs_raise_input_error(trained):
    model, _, _ = trained
    clip = parse_clip_rule("percentile")
    with pytest.raises(InputError, match="Hessian shape"):
        gptq_quantize(torch.randn(4, 6), torch.eye(5), 4, clip)
    with pytest.raises(InputError, match="NaN"):
        gptq_quantize(torch.full((4, 6), float("nan")), torch.eye(6), 4, clip)
    with pytest.raises(InputError, match="no batches"):
        collect_hessians(model, [], "cpu")
    with pytest.raises(InputError, match="2-D float"):
        gptq_state_dict({"up.bias": model.up.bias}, {"up.bias": torch.eye(1)}, lambda n: 4, lambda n, b: clip)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gptq_on_cuda_matches_cpu(trained):
    model, calibration, _ = trained
    hessian = collect_hessians(model, [calibration], "cpu")["down.weight"]
    weight = model.down.weight.detach()
    clip = parse_clip_rule("percentile")
    cpu_codes, _ = gptq_quantize(weight, hessian, 4, clip)
    cuda_codes, _ = gptq_quantize(weight.cuda(), hessian.cuda(), 4, clip)
    assert (cpu_codes != cuda_codes.cpu()).float().mean() < 0.01
