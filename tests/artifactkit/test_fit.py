"""`artifactkit fit`: the knapsack solver against brute force, and the command end to
end on a tiny real model whose factory lives in this module (`--model
tests.eval.tiny_lm:build`), with real calibration, real GPTQ and
real codecs."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from artifactkit.checkpoint import load_checkpoint
from artifactkit.cli import main
from artifactkit.fit.candidates import Group
from artifactkit.fit.knapsack import best_upgrade, fill_greedy, smallest_step, solve_knapsack
from artifactkit.fit.sensitivity import Calibration, kl_sensitivities
from artifactkit.format.reader import read_artifact
from artifactkit.plan.policy import int_scheme
from artifactkit.quantize.apply import QuantEntry
from artifactkit.quantize.intn import quantize
from eval.shards import write_shard
from tests.eval.tiny_lm import build as build_tiny_lm

REPO_ROOT = Path(__file__).resolve().parents[2]
FACTORY = "tests.eval.tiny_lm:build"
CONFIG = {"vocab_size": 256, "dim": 160, "heads": 1, "layers": 1, "max_seq_len": 32, "seq_len": 16}
# The bits x clip family only (no SDClip steps, no fp16): the solver's behaviour on a small candidate set.
ONE_FAMILY = ["--step-grid", "none", "--no-keep-float"]
SMALL_CHOICES = ["--bits-choices", "4,6,8", "--clip-choices", "percentile,std:4", "--calib-seqs", "8", *ONE_FAMILY]


# The model: one pre-norm GPT-2-named block (classified attn / mlp) from the shared test factory.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A checkpoint in the project format (heavy-tailed weights, so clip choices matter),
    the same weights as a raw state dict, and a validation shard."""
    root = tmp_path_factory.mktemp("fit")
    torch.manual_seed(0)
    model = build_tiny_lm(CONFIG)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                noise = torch.randn(parameter.shape, generator=generator)
                scale = torch.rand(parameter.shape, generator=generator).pow(4) * 6 + 0.5  # a few large weights
                parameter.copy_(noise * scale / parameter.shape[1] ** 0.5)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save({"format": "artifactkit-checkpoint/1", "state_dict": state, "config": CONFIG, "arch": FACTORY,
                "step": 0, "metrics": {}, "tokenizer_sha256": None}, root / "ckpt.pt")
    torch.save(state, root / "raw_state.pt")
    write_shard(root / "val_000000.bin", (np.arange(4096) % 256).astype(np.uint16))
    return root


@pytest.fixture(autouse=True)
def importable_factory(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These matrices are small: one intra-op thread is faster than two fighting over
    a shared 2-core machine (measured 5x less wall time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_fit(*args: str):
    return CliRunner().invoke(main, ["fit", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def unconstrained(workdir) -> dict:
    """fit with a budget nothing reaches: every matrix at its least-damage candidate."""
    result = run_fit(str(workdir / "ckpt.pt"), "--budget", "1000000000", "-o", str(workdir / "big.akit"),
                     "--json", *SMALL_CHOICES)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def constrained(workdir, unconstrained) -> tuple[dict, int]:
    budget = int(unconstrained["artifact_bytes"] * 0.75)
    result = run_fit(str(workdir / "ckpt.pt"), "--budget", str(budget), "-o", str(workdir / "fit.akit"),
                     "--json", *SMALL_CHOICES)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout), budget


# --------------------------------------------------------------------------- the solver


def brute_force(costs, damages, capacity):
    best = None
    for plan in itertools.product(*(range(len(group)) for group in costs)):
        cost = sum(costs[g][i] for g, i in enumerate(plan))
        if cost <= capacity:
            damage = sum(damages[g][i] for g, i in enumerate(plan))
            if best is None or damage < best:
                best = damage
    return best


def random_instance(rng: random.Random):
    groups = rng.randint(1, 5)
    costs = [[rng.randint(1, 40) for _ in range(rng.randint(1, 4))] for _ in range(groups)]
    damages = [[rng.uniform(0, 10) for _ in group] for group in costs]
    capacity = rng.randint(0, sum(max(group) for group in costs) + 5)
    return costs, damages, capacity


def test_knapsack_matches_brute_force_on_random_instances():
    rng = random.Random(7)
    for _ in range(400):
        costs, damages, capacity = random_instance(rng)
        expected = brute_force(costs, damages, capacity)
        plan = solve_knapsack(costs, damages, capacity)
        if expected is None:
            assert plan is None
            continue
        assert plan is not None
        assert sum(costs[g][i] for g, i in enumerate(plan)) <= capacity
        assert sum(damages[g][i] for g, i in enumerate(plan)) == pytest.approx(expected, abs=1e-9)


def test_coarse_knapsack_stays_feasible_and_greedy_fill_leaves_no_fitting_step():
    rng = random.Random(11)
    for _ in range(200):
        costs, damages, capacity = random_instance(rng)
        costs = [[cost * 997 for cost in group] for group in costs]  # bytes far above the DP resolution
        capacity *= 997
        plan = solve_knapsack(costs, damages, capacity, resolution=7)
        expected = brute_force(costs, damages, capacity)
        if expected is None:
            assert plan is None
            continue
        plan = fill_greedy(costs, damages, plan, capacity)
        used = sum(costs[g][i] for g, i in enumerate(plan))
        assert used <= capacity
        assert best_upgrade(costs, damages, plan, capacity - used) is None
        step = smallest_step(costs, damages, plan)
        assert step is None or step > capacity - used
        assert sum(damages[g][i] for g, i in enumerate(plan)) >= expected - 1e-9


# --------------------------------------------------------------------------- the command


def test_fit_never_exceeds_the_budget_and_uses_it(workdir, constrained):
    document, budget = constrained
    line = document["budget"]
    artifact_path = workdir / "fit.akit"
    assert line["budget"] == budget
    assert line["total_bytes"] == artifact_path.stat().st_size + line["code_bytes"] <= budget
    assert line["headroom"] == budget - line["total_bytes"] >= 0
    # Uses the budget: no damage-lowering change it has not tried for real fits the headroom.
    step = document["smallest_step_bytes"]
    assert step is not None and line["headroom"] < step
    bits = {row["bits"] for row in document["plan"]}
    assert len(bits) > 1, "a budget between the smallest and largest plan needs mixed widths"
    assert document["damage_proxy"] == "hessian-kl"
    # GPTQ wherever a searched candidate won; round-to-nearest only as the policy's own scheme
    assert {row["method"] for row in document["plan"] if row["family"] != "policy"} == {"gptq"}
    # The artifact is real: it reads back and loads into the model.
    reader = read_artifact(artifact_path)
    planned = {row["name"]: row for row in document["plan"]}
    for tensor in reader.tensors:
        if tensor.name in planned:
            assert (tensor.bits, tensor.clip) == (planned[tensor.name]["bits"], planned[tensor.name]["clip"])
    build_tiny_lm(CONFIG).load_state_dict(reader.state_dict())


def test_tighter_budget_costs_more_damage(constrained, unconstrained):
    document, _ = constrained
    assert unconstrained["smallest_step_bytes"] is None  # everything at its best candidate
    assert document["total_damage"] > unconstrained["total_damage"]


def test_fit_is_deterministic_for_a_seed(workdir, constrained):
    document, budget = constrained
    again = run_fit(str(workdir / "ckpt.pt"), "--budget", str(budget), "-o", str(workdir / "again.akit"),
                    "--json", *SMALL_CHOICES)
    assert again.exit_code == 0, again.stderr
    assert (workdir / "again.akit").read_bytes() == (workdir / "fit.akit").read_bytes()
    assert json.loads(again.stdout)["plan"] == document["plan"]


def test_infeasible_budget_is_a_clean_error_and_writes_nothing(workdir):
    output = workdir / "too_small.akit"
    result = run_fit(str(workdir / "ckpt.pt"), "--budget", "1000", "-o", str(output), "--bits-choices", "4",
                     "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "4")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {workdir / 'ckpt.pt'}: even the smallest plan")
    assert "raise --budget" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()


def test_calibration_refuses_validation_shards(workdir):
    output = workdir / "val_calib.akit"
    result = run_fit(str(workdir / "ckpt.pt"), "--budget", "1000000000", "-o", str(output),
                     "--calib", str(workdir / "val_*.bin"), *SMALL_CHOICES)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {workdir / 'val_000000.bin'}: looks like a validation shard")
    assert "not allowed by the challenge rules" in result.stderr
    assert not output.exists()


def test_calibration_on_training_shards(workdir):
    shard = workdir / "shards" / "train_000000.bin"
    shard.parent.mkdir(exist_ok=True)
    write_shard(shard, np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint16))
    result = run_fit(str(workdir / "ckpt.pt"), "--budget", "1000000000", "-o", str(workdir / "shards.akit"),
                     "--calib", str(workdir / "shards" / "train_*.bin"), "--json", "--no-gptq",
                     "--bits-choices", "6", "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "4")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["calibration"]["source"].endswith("train_*.bin")
    assert {row["method"] for row in document["plan"]} == {"rtn"}


def test_without_a_model_the_weight_mse_proxy_is_used_and_said(workdir):
    result = run_fit(str(workdir / "raw_state.pt"), "--budget", "1000000000", "-o", str(workdir / "raw.akit"),
                     "--json", "--bits-choices", "4,8", "--clip-choices", "percentile", *ONE_FAMILY)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["damage_proxy"] == "weight-mse"
    assert "no model factory reference" in result.stderr and "weight-MSE proxy" in result.stderr
    assert {row["bits"] for row in document["plan"]} == {8}


def test_kl_sensitivity_grows_with_coarser_codes_and_leaves_the_model_unchanged(workdir):
    checkpoint = load_checkpoint(workdir / "ckpt.pt")
    model = build_tiny_lm(CONFIG)
    model.load_state_dict(checkpoint.state_dict)
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    name = "blocks.0.mlp.c_fc.weight"
    weight = checkpoint.state_dict[name]
    entries = [QuantEntry(name, "mlp", int_scheme(bits), "test", tuple(weight.shape), "float32",
                          quantized=quantize(weight, bits, "percentile")) for bits in (3, 8)]
    group = Group(name, "mlp", tuple(weight.shape), ("linear",), [], entries)
    calibration = Calibration(model, tokens, {}, {})
    (coarse,), (fine,) = kl_sensitivities(calibration, checkpoint.state_dict, [group, group], [0, 1],
                                          torch.device("cpu"))
    assert coarse > fine > 0
    # The model is given back with its float weights.
    assert torch.equal(model.state_dict()[name], weight)


def test_lookup_tables_without_hessian_are_searched_under_kl_and_fixed_under_plain_hessian(workdir):
    # With a low small-tensor threshold the token and position embeddings (lookups, never
    # F.linear weights, so no Hessian) are stored as integers too.
    common = [str(workdir / "ckpt.pt"), "--budget", "1000000000", "--small-threshold", "4096", "--json",
              "--bits-choices", "4,8", "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "4"]
    scaled = run_fit(*common, "-o", str(workdir / "kl.akit"))
    assert scaled.exit_code == 0, scaled.stderr
    rows = {row["name"]: row for row in json.loads(scaled.stdout)["plan"]}
    assert rows["tok_emb.weight"]["method"] == rows["wpe.weight"]["method"] == "rtn"
    assert rows["lm_head.weight"]["method"] == "gptq"
    assert "no Hessian" in scaled.stderr
    plain = run_fit(*common, "--damage", "hessian", "-o", str(workdir / "plain.akit"))
    assert plain.exit_code == 0, plain.stderr
    document = json.loads(plain.stdout)
    assert document["fixed_at_policy"] == ["tok_emb.weight", "wpe.weight"]
    assert not {"tok_emb.weight", "wpe.weight"} & {row["name"] for row in document["plan"]}


def test_a_raw_state_dict_calibrates_with_model_and_config(workdir):
    config = workdir / "factory_args.json"
    config.write_text(json.dumps(CONFIG), encoding="utf-8")
    result = run_fit(str(workdir / "raw_state.pt"), "--budget", "1000000000", "-o", str(workdir / "raw_cfg.akit"),
                     "--json", "--model", FACTORY, "--config", str(config), "--bits-choices", "4,8",
                     "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "2")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["damage_proxy"] == "hessian-kl"
    assert document["calibration"]["seq_len"] == CONFIG["seq_len"]  # from --config, not the 1024 default
    assert "weight-MSE proxy" not in result.stderr


def test_config_without_a_factory_and_a_bad_config_are_clean_errors(workdir):
    config = workdir / "factory_args.json"
    config.write_text(json.dumps(CONFIG), encoding="utf-8")
    output = workdir / "never.akit"
    result = run_fit(str(workdir / "raw_state.pt"), "--budget", "1000000000", "-o", str(output),
                     "--config", str(config))
    assert result.exit_code == 2 and "pass --model module:function" in result.stderr
    broken = workdir / "broken.json"
    broken.write_text("[1, 2", encoding="utf-8")
    result = run_fit(str(workdir / "raw_state.pt"), "--budget", "1000000000", "-o", str(output),
                     "--model", FACTORY, "--config", str(broken))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {broken}: not valid JSON")
    assert "Traceback" not in result.stderr and not output.exists()


def test_calibration_length_defaults_to_the_training_config(workdir):
    """The project's checkpoints keep seq_len in train_config (the factory takes no seq_len)."""
    state = torch.load(workdir / "ckpt.pt", weights_only=True)
    state["config"] = {key: value for key, value in CONFIG.items() if key != "seq_len"}
    state["train_config"] = {"seq_len": 24}
    torch.save(state, workdir / "train_cfg.pt")
    result = run_fit(str(workdir / "train_cfg.pt"), "--budget", "1000000000", "-o", str(workdir / "train_cfg.akit"),
                     "--json", "--bits-choices", "8", "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["calibration"]["seq_len"] == 24


def test_progress_notices_go_to_stderr_only_when_asked(workdir):
    common = [str(workdir / "ckpt.pt"), "--budget", "1000000000", "--json", "--bits-choices", "8",
              "--clip-choices", "percentile", *ONE_FAMILY, "--calib-seqs", "2"]
    loud = run_fit(*common, "-o", str(workdir / "loud.akit"), "--progress")
    assert loud.exit_code == 0, loud.stderr
    assert "sampling 2 calibration sequences" in loud.stderr and "--calib TRAINING_SHARDS" in loud.stderr
    assert "measuring " in loud.stderr and "KL sensitivity of" in loud.stderr
    json.loads(loud.stdout)  # stdout stays one JSON document
    quiet = run_fit(*common, "-o", str(workdir / "quiet.akit"))  # the test runner's stderr is not a terminal
    assert quiet.exit_code == 0 and "measuring " not in quiet.stderr
