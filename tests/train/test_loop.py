"""The training loop end to end: learning, checkpoints, resume, wall-clock cap."""

from __future__ import annotations

import json
import math
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


def _clip_worker(rank: int, store: str, grad_clip_global: bool, results) -> None:
    import torch.distributed

    from train.loop import Distributed, clip_and_average_gradients

    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        parameter = torch.nn.Parameter(torch.zeros(2))
        parameter.grad = torch.tensor([10.0, 0.0]) if rank == 0 else torch.tensor([0.0, 0.1])
        config = replace(preset_config("tiny"), grad_clip=1.0, grad_clip_global=grad_clip_global)
        clip_and_average_gradients([parameter], config, Distributed(rank=rank, world_size=2))
        results[rank] = parameter.grad.tolist()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("grad_clip_global", [False, True])
def test_each_rank_clips_its_own_gradient_before_the_average_unless_global(tmp_path, grad_clip_global):
    """The seed clips per rank, then averages: rank 0's [10, 0] becomes [1, 0] before it
    meets rank 1's [0, 0.1]. The global option averages first, then clips the mean."""
    import torch.multiprocessing

    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_clip_worker, args=(str(tmp_path / "store"), grad_clip_global, results), nprocs=2)
    expected = [0.99995, 0.0099995] if grad_clip_global else [0.5, 0.05]
    for rank in (0, 1):
        assert results[rank] == pytest.approx(expected, rel=1e-4)


def test_weight_ema_warms_up_as_k_over_k_plus_10_and_needs_its_minimum_steps(tmp_path, prepared):
    snapshots = {}

    def keep_weights(step, row):
        state = torch.load(tmp_path / "ema" / "train_state.pt", weights_only=True)
        snapshots[step] = state["model"]["mlp_up_bank"].clone()

    config = micro_config(tmp_path / "ema", prepared, iterations=2, save_every=1, jepa_weight=0.0,
                          weight_ema_decay=0.9995, weight_ema_min_steps=2)
    result = run_training(config, on_step=keep_weights, console=lambda text: None)
    assert result.metrics["weights"] == "ema"
    # the seed's decay after k steps is k / (k + 10): 0 (a copy of step 1), then 1/11
    expected = snapshots[1] / 11 + snapshots[2] * 10 / 11
    saved = load_checkpoint(tmp_path / "ema" / "ckpt.pt")["state_dict"]["mlp_up_bank"]
    assert torch.allclose(saved, expected, atol=1e-6) and not torch.equal(saved, snapshots[2])

    short = run_training(replace(config, out=str(tmp_path / "short"), weight_ema_min_steps=3),
                         console=lambda text: None)
    assert short.metrics["weights"] == "raw"  # the seed: ema:skipped below its 1,000 steps
    raw = torch.load(tmp_path / "short" / "train_state.pt", weights_only=True)["model"]["mlp_up_bank"]
    assert torch.equal(load_checkpoint(tmp_path / "short" / "ckpt.pt")["state_dict"]["mlp_up_bank"], raw)


def test_bf16_master_weights_keep_the_seeds_parameters_in_bf16(tmp_path, prepared):
    from train.precision import apply_seed_master_dtypes

    torch.manual_seed(0)
    model = build_model(micro_config(tmp_path).model.to_dict())
    kept = apply_seed_master_dtypes(model)
    assert set(kept) == {"tok_emb.weight", "bigram.emb.weight", "skip_w", "blocks.0.rm", "blocks.1.rm"}
    bank = model.qo_bank.detach()
    assert bank.dtype == torch.float32 and torch.equal(bank, bank.bfloat16().float())  # rounded once at init

    run_training(micro_config(tmp_path / "run", prepared, iterations=2, jepa_weight=0.3, bf16_master_weights=True),
                 console=lambda text: None)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    dtypes = {name: tensor.dtype for name, tensor in state["model"].items()}
    assert dtypes["tok_emb.weight"] == dtypes["skip_w"] == dtypes["blocks.0.rm"] == torch.bfloat16
    assert dtypes["qo_bank"] == dtypes["blocks.0.attn.qg"] == dtypes["bigram.proj.weight"] == torch.float32
    assert {state["jepa"][name].dtype for name in ("predictor.0.weight", "ctx_proj.weight", "tgt_proj.weight")} \
        == {torch.bfloat16}
    assert state["jepa"]["target_qo_bank"].dtype == torch.float32
    checkpoint = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    build_model(checkpoint["config"]).load_state_dict(checkpoint["state_dict"])  # artifactkit's path still loads
    assert checkpoint["train_config"]["bf16_master_weights"] is True


def test_loop_state_round_trips_through_the_training_state_file(tmp_path):
    from train.checkpoint import load_training_state, save_training_state
    from train.loop import LoopState

    state = LoopState(step=7, elapsed_s=1.25, tokens_seen=3584, last_loss=5.5, data={"shard_index": 0, "offset": 99},
                      weight_ema={"w": torch.arange(4.0)}, swa_sum={"w": torch.ones(4)}, swa_count=2)
    save_training_state(tmp_path / "state.pt", {**state.to_dict(), "world_size": 1})
    restored = LoopState.from_dict(load_training_state(tmp_path / "state.pt"))  # weights_only=True inside
    assert (restored.step, restored.elapsed_s, restored.tokens_seen, restored.last_loss) == (7, 1.25, 3584, 5.5)
    assert restored.data == {"shard_index": 0, "offset": 99} and restored.swa_count == 2
    assert torch.equal(restored.weight_ema["w"], torch.arange(4.0)) and torch.equal(restored.swa_sum["w"], torch.ones(4))
    fresh = LoopState.from_dict(LoopState().to_dict())
    assert fresh.step == 0 and fresh.swa_sum is None and fresh.weight_ema is None and math.isnan(fresh.last_loss)
