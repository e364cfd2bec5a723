"""bench/gpu_check.sh, the prepared GPU check: no GPU has run it yet, so its CPU dry run
is the only thing that keeps it from rotting before the first session that gets one. The
dry run trains, fits and roundtrip-evaluates for real, at tiny sizes (seconds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bench/gpu_check.sh is a bash script")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=1200)


def test_help_and_a_wrong_option(tmp_path) -> None:
    shown = run("--help", cwd=tmp_path)
    assert shown.returncode == 0 and "--dry-run" in shown.stdout and "--python" in shown.stdout
    wrong = run("--fast", cwd=tmp_path)
    assert wrong.returncode == 2 and "unknown option --fast" in wrong.stderr


def test_dry_run_trains_fits_and_evaluates_and_says_the_gpu_is_unmeasured(tmp_path) -> None:
    report = tmp_path / "gpu_check.md"
    result = run("--dry-run", "--out", str(tmp_path / "out"), "--report", str(report), "--python", sys.executable,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    assert "the GPU path is UNMEASURED" in text
    for step in ("train", "fit", "roundtrip-eval"):
        assert f"| {step} |" in text and "TIMED OUT" not in text and "failed" not in text
    assert (tmp_path / "out" / "fit.akit").is_file()
