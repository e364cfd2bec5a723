"""fit's candidate families on a real (tiny, trained) model of the reference trainer:
SDClip steps (bytes fall as the step grows), keep-float (fp16 when the budget allows,
never worse than `pack` when the default pack fits), LQER candidates (stored and
loaded bit-exactly), and the tied embedding's two roles."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.fit.candidates import CandidateOptions, MatrixStats, build_group, width_for_step
from artifactkit.fit.pipeline import FitOptions, fit_checkpoint
from artifactkit.format.akit import pack_state_dict
from artifactkit.format.loader_export import loader_for_artifact
from artifactkit.format.reader import read_artifact
from artifactkit.plan.clip_rules import ClipRule
from artifactkit.plan.policy import default_policy, int_scheme
from artifactkit.quantize.gptq import gptq_candidates, gptq_quantize, prepare_hessian
from artifactkit.quantize.intn import row_clip
from tests.artifactkit.test_loader import bit_identical, run_loader
from train.testing import tiny_checkpoint

# The micro model's matrices and embedding are <= 65,536 elements; a lower threshold lets
# fit quantize them (the tied embedding 1024 x 64 included).
THRESHOLD = ["--small-threshold", "4096", "--calib-seqs", "4", "--seq-len", "32", "--clip-choices", "percentile"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_checkpoint(tmp_path_factory.mktemp("fitc") / "ckpt.pt", steps=6, jepa_weight=0.0)


def run_fit(*args: str) -> dict:
    result = CliRunner().invoke(main, ["fit", *args, "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_stacked_candidates_equal_one_gptq_pass_each():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(24, 32, generator=generator)
    inputs = torch.randn(256, 32, generator=generator) * torch.linspace(0.2, 3.0, 32)
    hessian = 2 * inputs.T.double() @ inputs.double() / 256
    prepared = prepare_hessian(hessian, act_order=True)
    specs = [(bits, ClipRule("std", multiple)) for bits, multiple in ((4, 2.5), (6, 9.0), (8, 30.0))]
    stacked = gptq_candidates(weight, prepared, [(bits, row_clip(weight, bits, rule)) for bits, rule in specs])
    for (bits, rule), (codes, scales) in zip(specs, stacked, strict=True):
        alone = gptq_quantize(weight, prepared, bits, rule, act_order=True)
        assert torch.equal(codes, alone[0]) and torch.equal(scales, alone[1])


def test_sdclip_step_bytes_fall_as_the_step_grows(checkpoint):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    weight = state["mlp_up_bank"][0]  # [hidden, dim], a trained matrix
    options = CandidateOptions(bits_choices=(4, 5, 6, 7, 8), clip_choices=(), keep_float=False, gptq=False)
    group = build_group("b.0.m.u", "mlp", weight, MatrixStats(), default_policy(), int_scheme(6), options,
                        torch.device("cpu"))
    steps = [c for c in group.candidates if c.family == "steps"]
    assert len(steps) == len(options.step_grid)
    sizes = [c.bytes for c in steps]
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False)), sizes  # coarser step, fewer bytes
    assert sizes[0] > 1.5 * sizes[-1]
    errors = [c.damage for c in steps]
    assert errors[0] < errors[-1]  # and more damage
    # each step's width is the narrowest that still reaches 12 row stds
    assert [c.bits for c in steps] == [width_for_step(s, (4, 5, 6, 7, 8)) for s in options.step_grid]
    assert (steps[0].bits, steps[-1].bits) == (8, 4)  # 0.12 x 127 >= 12 > 0.12 x 63; 2.1 x 7 >= 12 > 2.1 x 3


def test_keep_float_when_the_budget_allows_everything(checkpoint, tmp_path):
    document = run_fit(str(checkpoint), "--budget", "1000000000", "-o", str(tmp_path / "f.akit"), *THRESHOLD,
                       "--bits-choices", "6", "--step-grid", "0.4")
    assert {row["scheme"] for row in document["plan"]} == {"fp16"}
    assert all(t.label == "fp16" for t in read_artifact(tmp_path / "f.akit").tensors if t.category != "control")


def test_never_worse_than_pack_when_the_default_pack_fits(checkpoint):
    policy = replace(default_policy(), small_threshold=4096)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    pack_bytes = pack_state_dict(state, policy).artifact_bytes
    # fit's header says more (its policy name and choices), so allow what the header costs
    result = fit_checkpoint(checkpoint, FitOptions(budget=pack_bytes + 400, small_threshold=4096, calib_seqs=4,
                                                   seq_len=32, bits_choices=(5, 6, 8), clip_choices=("percentile",),
                                                   step_grid=(0.3, 0.45)))
    assert result.line.total_bytes <= pack_bytes + 400
    assert result.policy_plan_damage is not None  # what pack writes fits, so fit weighed it
    assert result.total_damage <= result.policy_plan_damage
    assert result.total_damage < 0.9 * result.policy_plan_damage  # and its searched candidates do better


def test_tied_embedding_has_a_lookup_and_an_output_role(checkpoint, tmp_path):
    document = run_fit(str(checkpoint), "--budget", "1000000000", "-o", str(tmp_path / "t.akit"), *THRESHOLD,
                       "--no-keep-float", "--step-grid", "none", "--bits-choices", "4")
    rows = {row["name"]: row for row in document["plan"]}
    assert rows["tok_emb.weight"]["roles"] == ["linear", "lookup"]
    assert rows["b.0.m.u"]["roles"] == ["linear"]
    assert rows["bigram.emb.weight"]["roles"] == ["lookup"]  # a lookup table only
    assert rows["tok_emb.weight"]["damage"] > 0


def test_lqer_candidates_are_stored_and_load_bit_exactly(checkpoint, tmp_path):
    path = tmp_path / "lqer.akit"
    document = run_fit(str(checkpoint), "--budget", "1000000000", "-o", str(path), *THRESHOLD, "--no-keep-float",
                       "--step-grid", "none", "--bits-choices", "8", "--lqer", "4")
    chosen = [row for row in document["plan"] if row["lqer_rank"]]
    assert chosen, "a rank-4 correction lowers int8 damage further, so the least-damage plan uses it"
    data = path.read_bytes()
    assert struct.unpack_from("<8sH", data)[1] == 2
    reader = read_artifact(path)
    assert {t.name for t in reader.tensors if t.lowrank} == {row["name"] for row in chosen}
    out = tmp_path / "state.pt"
    assert CliRunner().invoke(main, ["unpack", str(path), "-o", str(out)]).exit_code == 0
    unpacked = torch.load(out, weights_only=True)
    loaded = run_loader(tmp_path, loader_for_artifact(reader.header).text, [path])[str(path)]
    assert all(bit_identical(loaded[name], tensor) for name, tensor in unpacked.items())
