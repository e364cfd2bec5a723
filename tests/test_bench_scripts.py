"""Every benchmark script imports and explains itself from any working directory.

Benchmarks are not run in CI (they take minutes and measure speed); this catches the
breakage that otherwise shows up only when someone regenerates a report: a renamed
import, a module shadowed by a script name, a sys.path assumption."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = {"bench_common.py"}  # imported by the scripts (so their --help covers it), not run
SCRIPTS = sorted(path.name for path in BENCH.glob("*.py") if path.name not in HELPERS)


def test_there_are_benchmarks() -> None:
    assert {"pack.py", "compress.py", "ans_floor.py", "gptq_speed.py", "eval_throughput.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help_runs_from_elsewhere(script: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:") and "Traceback" not in result.stderr
