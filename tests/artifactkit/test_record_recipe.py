"""The record recipe (`artifactkit.fit.record`) against the public record's own rules:
its scales (k * unbiased std / R, fp16) on a hand-made matrix and on a row where a
converted k alone lands one fp16 step off; GPTQ codes against an independent float32
re-implementation of the record's `gptq_quantize_weight`; LQER on the top-k matrices
only; the tied embedding's Hessian from the output head; and `pack --recipe record`."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.fit.record import (
    RecordRecipe,
    gptq_record_rows,
    population_multiple,
    record_hessians,
    record_quantize,
    record_scales,
)
from artifactkit.format.akit import pack_state_dict
from artifactkit.format.reader import read_artifact
from artifactkit.plan.clip_rules import ClipRule
from artifactkit.plan.policy import default_policy
from artifactkit.quantize.intn import row_clip, scales_from_clip
from eval.shards import write_shard
from tests.eval.tiny_lm import build as build_tiny_lm

REPO_ROOT = Path(__file__).resolve().parents[2]

# Row 19526 of torch.randn(200000, 16) with torch.Generator().manual_seed(0): with
# k = 13 its record scale fp16(13 * std / 31) is 0.498779296875, but the population-std
# rule with the converted k gives 0.49853515625 (float32 products on either side of
# an fp16 rounding midpoint). The recipe must still give the record's value.
TIE_ROW = [0.7143970727920532, 1.830551266670227, -0.8828417062759399, -0.6133419275283813, 1.0071994066238403,
           0.7071169018745422, 0.3309737741947174, -1.6957780122756958, -2.53385066986084, 0.5301982760429382,
           0.7736383080482483, -1.7003624439239502, 0.5461062788963318, 1.0237637758255005, -0.23926806449890137,
           0.3146532475948334]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def record_reference_gptq(weight: torch.Tensor, hessian: torch.Tensor, clip_sigmas: float, clip_range: int,
                          block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The record's `gptq_quantize_weight`, re-written here from its description, in
    float32 like the original: dead columns zeroed, 1% damping, act order, upper
    Cholesky factor of H^-1, SDClip scales on the unbiased row std, block updates."""
    original = weight.float().clone()
    rows, cols = original.shape
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h.diagonal().add_(0.01 * h.diag().mean())
    order = torch.argsort(h.diag(), descending=True)
    inverse_order = torch.argsort(order)
    work = original[:, order].clone()
    work[:, dead[order]] = 0
    h = h[order][:, order]
    factor = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    scale = (clip_sigmas * original.std(dim=1) / clip_range).clamp_min(1e-10).to(torch.float16)
    scale32 = scale.float()
    codes = torch.zeros(rows, cols, dtype=torch.int8)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = work[:, start:end].clone()
        errors = torch.zeros(rows, end - start)
        for j in range(end - start):
            column = block[:, j]
            rounded = torch.clamp(torch.round(column / scale32), -clip_range, clip_range)
            codes[:, start + j] = rounded.to(torch.int8)
            error = (column - rounded * scale32) / factor[start + j, start + j]
            errors[:, j] = error
            block[:, j:] -= error[:, None] * factor[start + j, start + j:end][None, :]
        work[:, end:] -= errors @ factor[start:end, end:]
    return codes[:, inverse_order], scale


def random_hessian(cols: int, samples: int, seed: int, dead: tuple[int, ...] = ()) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, cols, generator=generator) * torch.linspace(0.2, 3.0, cols)
    inputs[:, list(dead)] = 0.0
    return inputs.T @ inputs / samples


# --------------------------------------------------------------------------- scales


def test_scales_equal_k_times_unbiased_std_over_levels_on_a_hand_made_matrix() -> None:
    rows = [[1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.25, 0.0],
            [0.01, 0.02, -0.03, 0.04, -0.05, 0.06, -0.07, 0.08],
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, -3.0],
            [-0.125, 0.375, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    weight = torch.tensor(rows)
    for bits, levels, k in ((6, 31, 13.0), (7, 63, 15.0), (6, 31, 12.0 * 0.8)):
        expected = torch.tensor([k * statistics.stdev(row) / levels for row in rows]).to(torch.float16)
        quantized = gptq_record_rows(weight, torch.eye(8), bits, k, RecordRecipe(), "hand")
        assert torch.equal(quantized.scales, expected), (bits, k)
        assert torch.equal(quantized.scales, record_scales(weight, bits, k))
        # With an identity Hessian GPTQ is round-to-nearest: codes = clamp(round(w / scale)).
        nearest = torch.clamp(torch.round(weight / expected.float()[:, None]), -levels, levels).to(torch.int8)
        assert torch.equal(quantized.codes, nearest)


def test_scales_match_the_record_where_a_converted_k_alone_is_one_fp16_step_off() -> None:
    row = torch.tensor([TIE_ROW])
    converted = scales_from_clip(row_clip(row, 6, ClipRule("std", population_multiple(13.0, 16))), 6)
    record = record_scales(row, 6, 13.0)
    assert record.item() == 0.498779296875 and converted.item() == 0.49853515625  # the hazard is real
    weight = torch.cat([torch.randn(5, 16, generator=torch.Generator().manual_seed(3)), row])
    quantized = gptq_record_rows(weight, random_hessian(16, 64, 1), 6, 13.0, RecordRecipe(), "tie")
    assert torch.equal(quantized.scales, record_scales(weight, 6, 13.0))
    reference_codes, reference_scales = record_reference_gptq(weight, random_hessian(16, 64, 1), 13.0, 31)
    assert torch.equal(quantized.scales, reference_scales)
    assert torch.equal(quantized.codes, reference_codes)


# --------------------------------------------------------------------------- GPTQ


@pytest.mark.parametrize(("bits", "k", "dead"), [(6, 13.0, ()), (6, 12.0, (3, 40)), (7, 15.0, (0,)), (4, 6.0, ())])
def test_codes_equal_an_independent_reimplementation_of_the_record_gptq(bits, k, dead) -> None:
    generator = torch.Generator().manual_seed(bits)
    weight = torch.randn(24, 160, generator=generator) * torch.rand(24, 1, generator=generator)
    weight += torch.randn(24, 160, generator=generator).pow(3) * 0.05  # a few heavy tails
    hessian = random_hessian(160, 400, seed=bits, dead=dead)
    levels = 2 ** (bits - 1) - 1
    reference_codes, reference_scales = record_reference_gptq(weight, hessian, k, levels)
    quantized = gptq_record_rows(weight, hessian, bits, k, RecordRecipe(), "w")
    assert torch.equal(quantized.scales, reference_scales)
    assert torch.equal(quantized.codes, reference_codes)
    if dead:
        assert not quantized.codes[:, list(dead)].any()  # the record zeroes dead columns


def test_gptq_through_the_recipe_matches_the_reference_and_beats_round_to_nearest() -> None:
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(32, 128, generator=generator)
    hessian = random_hessian(128, 512, seed=7)
    state = {"blocks.0.mlp.fc.weight": weight}
    model = record_quantize(state, {"blocks.0.mlp.fc.weight": hessian}, RecordRecipe(small_threshold=0, lqer_top_k=0))
    (entry,) = model.entries
    reference_codes, _ = record_reference_gptq(weight, hessian, 12.0, 31)
    assert entry.scheme.bits == 6 and torch.equal(entry.quantized.codes, reference_codes)
    nearest = torch.clamp(torch.round(weight / entry.quantized.scales.float()[:, None]), -31, 31)

    def output_error(restored: torch.Tensor) -> float:
        delta = (weight - restored).double()
        return float(((delta @ hessian.double()) * delta).sum())

    assert output_error(entry.restored()) < 0.9 * output_error(nearest * entry.quantized.scales.float()[:, None])


# --------------------------------------------------------------------------- roles, LQER


def four_matrices() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(11)
    names = ["blocks.0.attn.c_q.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.fc.weight",
             "blocks.0.mlp.proj.weight"]
    state = {name: torch.randn(48, 64, generator=generator) * magnitude
             for name, magnitude in zip(names, (1.0, 4.0, 2.0, 3.0), strict=True)}
    state["tok_emb.weight"] = torch.randn(96, 64, generator=generator) * 0.5
    state["blocks.0.attn_scale"] = torch.ones(64)
    hessians = {name: random_hessian(64, 256, seed=index) for index, name in enumerate(state) if name.endswith("weight")}
    return state, hessians


def test_lqer_goes_only_to_the_top_k_matrices_by_gptq_error_norm() -> None:
    state, hessians = four_matrices()
    model = record_quantize(state, hessians, RecordRecipe(small_threshold=0, lqer_top_k=2))
    entries = {entry.name: entry for entry in model.entries}
    errors = {name: float(torch.linalg.vector_norm(state[name] - entry.quantized.dequantize()))
              for name, entry in entries.items() if entry.quantized is not None}
    top_two = sorted(errors, key=errors.get, reverse=True)[:2]
    assert top_two == ["blocks.0.attn.proj.weight", "blocks.0.mlp.proj.weight"]  # magnitudes 4 and 3
    assert sorted(model.meta["lqer"]) == sorted(top_two)
    for name, entry in entries.items():
        assert (entry.lowrank is not None) == (name in top_two), name
    for name in top_two:
        factors = entries[name].lowrank
        assert factors.rank == 4 and factors.group == 64
        assert set(factors.a_codes.unique().tolist()) <= {-2, -1, 0, 1}
        assert int(factors.b_codes.min()) >= -8 and int(factors.b_codes.max()) <= 7
        corrected = float(torch.linalg.vector_norm(state[name] - entries[name].restored()))
        assert corrected < errors[name]
    off = record_quantize(state, hessians, RecordRecipe(small_threshold=0, lqer_top_k=0))
    assert all(entry.lowrank is None for entry in off.entries) and off.meta["lqer"] == []


def test_roles_widths_and_the_fp16_passthrough_follow_the_record() -> None:
    state, hessians = four_matrices()
    recipe = RecordRecipe(small_threshold=0, lqer_top_k=0, k_mult=0.5)
    entries = {entry.name: entry for entry in record_quantize(state, hessians, recipe).entries}
    expected = {"blocks.0.attn.c_q.weight": (6, 13.0), "blocks.0.mlp.fc.weight": (6, 12.0),
                "tok_emb.weight": (7, 15.0)}
    for name, (bits, k) in expected.items():
        assert entries[name].scheme.bits == bits
        assert torch.equal(entries[name].quantized.scales, record_scales(state[name], bits, k * 0.5))
    assert str(entries["blocks.0.attn_scale"].scheme.kind) == "fp16"  # control: fp16, as the record stores it
    default = record_quantize(state, hessians, RecordRecipe(lqer_top_k=0))
    assert all(str(entry.scheme.kind) == "fp16" for entry in default.entries)  # everything <= 65,536 elements


def test_recipe_options_are_typed_and_checked() -> None:
    recipe = RecordRecipe().with_options(["k_mult=1.1", "embed_bits=8", "act_order=false", "seq_len=auto"])
    assert (recipe.k_mult, recipe.embed_bits, recipe.act_order, recipe.seq_len) == (1.1, 8, False, None)
    assert recipe.clip_sigmas("attn") == pytest.approx(14.3) and recipe.bits("embed") == 8
    assert RecordRecipe.from_json(json.loads(json.dumps(recipe.to_json()))) == recipe
    for bad, message in (("k_mul=2", "unknown option"), ("k_mult=abc", "not a valid float"),
                         ("embed_bits=9", "2..8"), ("k_mult=-1", "> 0"), ("k_mult", "KEY=VALUE")):
        with pytest.raises(InputError, match=message):
            RecordRecipe().with_options([bad])


# --------------------------------------------------------------------------- the tied head's Hessian


def test_tied_embedding_hessian_comes_from_the_final_norm_output() -> None:
    from train.model import GPT, ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, xsa_last_n=1,
                            bigram_vocab=16, bigram_dim=8))
    tokens = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    hessians = record_hessians(model, tokens, "cpu", batch_sequences=3)
    with torch.no_grad():
        hidden = [model.hidden_states(tokens[start : start + 3]).reshape(-1, 32).double() for start in (0, 3)]
    expected = sum(h.T @ h for h in hidden) / 2  # the record: sum over batches of X^T X / batches
    assert torch.allclose(hessians["tok_emb.weight"], expected, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("record")
    config = {"vocab_size": 256, "dim": 160, "heads": 1, "layers": 1, "max_seq_len": 32, "seq_len": 16}
    torch.manual_seed(0)
    model = build_tiny_lm(config)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save({"format": "artifactkit-checkpoint/1", "state_dict": state, "config": config,
                "arch": "tests.eval.tiny_lm:build", "step": 0, "metrics": {}, "tokenizer_sha256": None},
               root / "ckpt.pt")
    write_shard(root / "train_000000.bin", (np.arange(8192) * 7 % 256).astype(np.uint16))
    return root


@pytest.fixture
def importable_factory(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def test_pack_recipe_record_writes_the_recipe_and_plain_pack_is_unchanged(tiny_run, importable_factory) -> None:
    out = tiny_run / "record.akit"
    result = CliRunner().invoke(main, ["pack", str(tiny_run / "ckpt.pt"), "--recipe", "record", "--calib",
                                       str(tiny_run / "train_*.bin"), "--recipe-option", "small_threshold=1024",
                                       "--recipe-option", "calibration_sequences=8", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    document = json.loads(result.stdout)
    reader = read_artifact(out)
    labels = {tensor.name: tensor.label for tensor in reader.tensors}
    assert labels["blocks.0.attn.c_attn.weight"] == "int6" and labels["blocks.0.mlp.c_fc.weight"] == "int6"
    assert labels["tok_emb.weight"] == "int7" and labels["lm_head.weight"] == "int6"  # lm_head: a "matrix"
    assert labels["ln_f.weight"] == "fp16" and document["policy"].startswith("record")
    assert reader.header["meta"]["recipe"]["small_threshold"] == 1024
    stored_lowrank = [t["name"] for t in reader.header["tensors"] if "lowrank" in t]
    assert sorted(stored_lowrank) == sorted(reader.header["meta"]["lqer"]) and len(stored_lowrank) == 3
    # What unpack restores is the recipe's model, LQER corrections applied, bit for bit.
    from artifactkit.fit.record import quantize_checkpoint

    model, _ = quantize_checkpoint(tiny_run / "ckpt.pt", RecordRecipe(small_threshold=1024, calibration_sequences=8),
                                   str(tiny_run / "train_*.bin"))
    restored = reader.expanded_state_dict()
    for entry in model.entries:
        assert torch.equal(restored[entry.name], entry.restored().to(restored[entry.name].dtype)), entry.name
    plain = tiny_run / "plain.akit"
    assert CliRunner().invoke(main, ["pack", str(tiny_run / "ckpt.pt"), "-o", str(plain)]).exit_code == 0
    from artifactkit.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_run / "ckpt.pt")
    meta = {"arch": loaded.arch, "config": loaded.config, "step": loaded.step,
            "tokenizer_sha256": loaded.tokenizer_sha256, "source_kind": loaded.kind}
    assert plain.read_bytes() == pack_state_dict(loaded.state_dict, default_policy(), meta=meta).data


@pytest.mark.parametrize(("extra", "message"), [
    ([], "needs --calib"),
    (["--calib", "x", "--bits", "attn=5"], "--bits cannot be combined with --recipe"),
    (["--calib", "x", "--recipe-option", "k_mult=zero"], "not a valid float"),
])
def test_pack_recipe_usage_errors_exit_2(tiny_run, extra, message) -> None:
    result = CliRunner().invoke(main, ["pack", str(tiny_run / "ckpt.pt"), "--recipe", "record",
                                       "-o", str(tiny_run / "bad.akit"), *extra])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tiny_run / "bad.akit").exists()


def test_pack_without_recipe_refuses_recipe_only_options(tiny_run) -> None:
    result = CliRunner().invoke(main, ["pack", str(tiny_run / "ckpt.pt"), "--calib", "x", "-o",
                                       str(tiny_run / "bad.akit")])
    assert result.exit_code == 2 and "apply only with --recipe record" in result.stderr


def test_population_multiple_converts_bessel() -> None:
    assert population_multiple(13.0, 16) == pytest.approx(13.0 * math.sqrt(16 / 15))
