"""`python -m train` and `python -m train prepare-data` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from train.config import resolve_config

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    if args[:1] != ("prepare-data",):
        args = (*args, "--cpu-threads", "1")  # robust on a machine shared with other jobs
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_train_cli_writes_checkpoint_log_and_run_json(tmp_path):
    out = tmp_path / "run"
    result = run_cli("--preset", "tiny", "--iterations", "2", "--out", str(out), "--jepa-weight", "0",
                     "--num-layers", "2", "--model-dim", "64", "--num-heads", "2", "--num-kv-heads", "1",
                     "--xsa-last-n", "1", "--seq-len", "64", "--batch-tokens", "512", "--val-tokens", "2048")
    assert result.returncode == 0, result.stderr
    assert "tok/s" in result.stdout and "ms/step" in result.stdout
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["num_layers"] == 2 and checkpoint["train_config"]["jepa_weight"] == 0.0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"step", "loss", "elapsed_s"} <= set(rows[0])
    run = json.loads((out / "run.json").read_text())
    assert Path(run["tokenizer"]) == out / "tokenizer.model"
    assert run["train_glob"].endswith("data/train_*.bin") and run["val_glob"].endswith("data/val_*.bin")
    assert list((out / "data").glob("val_*.bin")) and list((out / "data").glob("train_*.bin"))
    assert run["final_metrics"]["val_bpb"] > 0


def test_precedence_preset_then_toml_then_command_line(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "seed11"\niterations = 77\njepa_weight = 0.1\n[model]\nnum_layers = 9\n')
    config = resolve_config(None, str(toml), {"jepa_weight": 0.0, "model": {"model_dim": 256}})
    assert config.preset == "seed11" and config.seq_len == 2048  # from the preset
    assert config.iterations == 77 and config.model.num_layers == 9  # from the file
    assert config.jepa_weight == 0.0 and config.model.model_dim == 256  # from the command line


def test_bad_inputs_give_one_error_line_and_exit_2(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("iterations = 5\nnot_a_field = 1\n")
    result = run_cli("--config", str(toml), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "not_a_field" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("--data", str(tmp_path), "--tokenizer", str(toml), "--out", str(tmp_path / "y"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_prepare_data_cli(tmp_path, shakespeare_text):
    source = tmp_path / "text.txt"
    source.write_text(shakespeare_text[:300_000], encoding="utf-8")
    result = run_cli("prepare-data", str(source), "--out", str(tmp_path / "data"), "--documents", "paragraph")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "tokenizer.model").is_file()
    assert list((tmp_path / "data" / "data").glob("train_*.bin"))
    assert "tokens" in result.stdout


def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
               "--iterations", "2", "--out", str(out), "--num-layers", "2", "--model-dim", "64", "--num-heads", "2",
               "--num-kv-heads", "1", "--xsa-last-n", "1", "--seq-len", "64", "--batch-tokens", "1024",
               "--grad-accum-steps", "2", "--val-tokens", "2048", "--cpu-threads", "1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if not row.get("final")] == [1, 2]  # one writer, not two
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 2


def test_every_config_field_is_an_option_with_help_text():
    from click.testing import CliRunner

    from train.__main__ import train_command
    from train.config import option_fields

    rows = option_fields()
    assert all(help_text.strip() for _, _, _, help_text in rows)
    shown = CliRunner().invoke(train_command, ["--help"], terminal_width=200).output
    for _, name, _, _ in rows:
        assert "--" + name.replace("_", "-") in shown, name
