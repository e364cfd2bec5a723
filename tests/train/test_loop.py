"""The training loop end to end: learning, checkpoints, resume, wall-clock cap."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch

from train.checkpoint import TRAINING_ONLY_PREFIXES, load_checkpoint
from train.config import apply_overrides, preset_config
from train.loop import run_training
from train.model import build_model
from train.testing import micro_config, tiny_checkpoint


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_thirty_step_tiny_run_lowers_the_loss(tmp_path, prepared):
    config = apply_overrides(preset_config("tiny"), {
        "out": str(tmp_path / "run"), "iterations": 30, "batch_tokens": 1024, "val_every": 15,
        "val_tokens": 4096, "device": "cpu", "cpu_threads": 1, "train_glob": prepared.train_glob, "val_glob": prepared.val_glob,
        "tokenizer": str(prepared.tokenizer)})
    started = time.perf_counter()
    result = run_training(config, console=lambda text: None)
    print(f"30-step tiny run: {time.perf_counter() - started:.1f}s")
    rows = read_log(tmp_path / "run")
    steps = [row for row in rows if not row.get("final")]
    assert [row["step"] for row in steps] == list(range(1, 31))
    first, last_five = steps[0]["loss"], sum(row["loss"] for row in steps[-5:]) / 5
    assert first > 6.5  # ~ln(1024) at init
    assert last_five < first - 0.8
    val_mid = next(row["val_loss"] for row in steps if "val_loss" in row)
    assert result.metrics["val_loss"] < first - 0.8
    assert result.metrics["val_loss"] <= val_mid + 0.05
    assert 0 < result.metrics["val_bpb"] < 10


def test_checkpoint_holds_only_the_context_encoder_in_the_project_format(tmp_path, prepared):
    path = tiny_checkpoint(tmp_path / "ckpt.pt", steps=2, jepa_weight=0.3, prepared=prepared)
    checkpoint = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert checkpoint["format"] == "artifactkit-checkpoint/1"
    assert checkpoint["arch"] == "train.model:build_model"
    assert checkpoint["step"] == 2
    assert checkpoint["tokenizer_sha256"] and len(checkpoint["tokenizer_sha256"]) == 64
    assert checkpoint["train_config"]["jepa_weight"] == 0.3
    assert checkpoint["train_config"]["model"] == checkpoint["config"]
    assert {"val_loss", "val_bpb", "train_loss"} <= set(checkpoint["metrics"])
    names = set(checkpoint["state_dict"])
    assert not [n for n in names if n.startswith(TRAINING_ONLY_PREFIXES)]
    assert not [n for n in names if "predictor" in n or "proj" in n and not n.startswith("bigram.")]
    model = build_model(checkpoint["config"])
    assert names == set(model.state_dict())
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    # while the training state does carry the JEPA head and the target banks
    state = torch.load(path.with_name("ckpt.pt.run") / "train_state.pt", weights_only=True)
    assert {"predictor.0.weight", "ctx_proj.weight", "tgt_proj.weight", "target_qo_bank"} <= set(state["jepa"])
    assert not list(path.parent.glob(".*.tmp"))


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path, prepared):
    settings = {"iterations": 12, "save_every": 4, "jepa_weight": 0.3, "warmdown_frac": 0.5}
    straight = tmp_path / "straight"
    run_training(micro_config(straight, prepared, **settings), console=lambda text: None)

    crashed = tmp_path / "crashed"

    class Killed(Exception):
        pass

    def kill_at_step_ten(step, row):
        if step == 10:
            raise Killed  # after step 10's log row; the last saved state is step 8

    with pytest.raises(Killed):
        run_training(micro_config(crashed, prepared, **settings), on_step=kill_at_step_ten,
                     console=lambda text: None)
    assert not (crashed / "ckpt.pt").exists()
    assert [row["step"] for row in read_log(crashed)] == list(range(1, 11))
    resumed = run_training(micro_config(crashed, prepared, resume=True, **settings), console=lambda text: None)
    assert resumed.step == 12

    curve = [(row["step"], row["loss"], row.get("jepa_loss")) for row in read_log(straight)]
    resumed_curve = [(row["step"], row["loss"], row.get("jepa_loss")) for row in read_log(crashed)]
    assert resumed_curve == curve
    a = load_checkpoint(straight / "ckpt.pt")["state_dict"]
    b = load_checkpoint(crashed / "ckpt.pt")["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_wall_clock_cap_stops_the_run_and_drives_the_warmdown(tmp_path, prepared):
    config = micro_config(tmp_path / "run", prepared, iterations=100000, max_wall_s=1.5, jepa_weight=0.0)
    result = run_training(config, console=lambda text: None)
    assert 0 < result.step < 100000
    rows = [row for row in read_log(tmp_path / "run") if not row.get("final")]
    assert rows[-1]["elapsed_s"] >= 1.5
    assert rows[-1]["lr_mult"] < 0.5  # the cosine warm-down followed the clock


def test_weight_averaging_is_applied_at_the_end(tmp_path, prepared):
    config = micro_config(tmp_path / "run", prepared, iterations=6, jepa_weight=0.0, swa_every=1,
                          warmdown_frac=0.5)
    result = run_training(config, console=lambda text: None)
    # progress 4/6 and 5/6 are past the warm-down start (0.5): two snapshots
    assert result.metrics["weights"] == "swa(2)"
    config = replace(config, out=str(tmp_path / "ema"), swa_every=0)
    assert run_training(config, console=lambda text: None).metrics["weights"] == "ema"
    for run in ("run", "ema"):
        saved = load_checkpoint(tmp_path / run / "ckpt.pt")["state_dict"]["mlp_up_bank"]
        raw = torch.load(tmp_path / run / "train_state.pt", weights_only=True)["model"]["mlp_up_bank"]
        assert not torch.equal(saved, raw)  # the averaged weights, not the last step's


def test_corrupt_training_state_is_refused_with_the_file_named(tmp_path, prepared):
    from train.checkpoint import CheckpointError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="train_state.pt: cannot load training state"):
        run_training(micro_config(run_dir, prepared, resume=True), console=lambda text: None)
