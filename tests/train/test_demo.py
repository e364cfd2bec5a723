"""The README demo, quick mode, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_demo_trains_both_runs_and_runs_or_skips_each_artifactkit_step(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "train.demo", "--quick", "--out", str(out), "--cpu-threads", "1"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("vanilla", "jepa"):
        checkpoint = torch.load(out / name / "ckpt.pt", weights_only=True)
        assert checkpoint["step"] == 6
        assert (out / name / "tokenizer.model").is_file() and list((out / name / "data").glob("val_*.bin"))
    assert torch.load(out / "vanilla" / "ckpt.pt", weights_only=True)["train_config"]["jepa_weight"] == 0.0
    assert "$ python -m train --preset tiny" in result.stdout
    assert "| vanilla (CE) |" in result.stdout and "| JEPA (0.3) |" in result.stdout
    for step in ("pack", "size-report", "roundtrip-eval", "report ab"):
        ran = f"$ artifactkit {step} " in result.stdout
        skipped = f"skipped: `artifactkit {step}` is not available" in result.stdout
        assert ran != skipped, step  # each step either ran (command printed) or was skipped with a notice
    if "$ artifactkit pack " in result.stdout:
        assert (out / "jepa" / "model.akit").is_file()
