"""The README demo, quick mode, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_demo_trains_both_runs_and_runs_every_artifactkit_step(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "train.demo", "--quick", "--out", str(out), "--cpu-threads", "1"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("vanilla", "jepa"):
        checkpoint = torch.load(out / name / "ckpt.pt", weights_only=True)
        assert checkpoint["step"] == 6
        assert (out / name / "tokenizer.model").is_file() and list((out / name / "data").glob("val_*.bin"))
    assert torch.load(out / "vanilla" / "ckpt.pt", weights_only=True)["train_config"]["jepa_weight"] == 0.0
    assert "$ python -m train --preset mid --num-layers 2" in result.stdout
    assert "nothing about the seed's 1.1896" in result.stdout  # says what a CPU run cannot reproduce
    assert "| vanilla (CE) |" in result.stdout and "| JEPA (0.3) |" in result.stdout
    for step in ("pack", "roundtrip-eval", "size-report", "check", "report ab", "fit"):
        assert f"$ artifactkit {step} " in result.stdout, step  # every artifactkit step ran
    # the demo's model is above the small-tensor threshold: pack int6-quantizes attn and MLP
    assert re.search(r"\battn\s+int6\b", result.stdout) and re.search(r"\bmlp\s+int6\b", result.stdout)
    for name in ("vanilla", "jepa"):
        assert (out / name / "model.akit").is_file()
        roundtrip = json.loads((out / name / "roundtrip.json").read_text())
        assert {"val_bpb_fp", "val_bpb_q", "delta_bpb", "tokens", "bytes", "mode"} <= set(roundtrip)
    # fit wrote an artifact at 60% of the int6 pack's bytes and evaluated it
    assert (out / "vanilla" / "fit.akit").stat().st_size <= 0.6 * (out / "vanilla" / "model.akit").stat().st_size
    assert "roundtrip val_bpb: float" in result.stdout
    for report in ("size.png", "size.md", "ab.png", "ab.md"):
        assert (out / report).stat().st_size > 0, report
    assert "vanilla CE" in (out / "ab.md").read_text()
