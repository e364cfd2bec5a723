"""The codes-coder benchmarks run end to end on a model trained here: bench/ans_real.py (every
stored-blob variant round-trips, the summary lists AKC6 / AKC5 / AKC4 / AKC3) and bench/recode.py (a
frontier points file's artifacts re-encoded, codes checked identical). The full runs are not
tests (tens of minutes); these guard the scripts against rot."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from artifactkit.checkpoint import load_checkpoint
from artifactkit.format.akit import encode_artifact, write_artifact
from artifactkit.format.ans import reference_rows
from artifactkit.plan.policy import default_policy
from artifactkit.quantize.apply import quantize_state_dict

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from train.testing import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("codes_bench") / "ckpt.pt", steps=20, jepa_weight=0.0)


def run_bench(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_ans_real_smoke_run_reports_every_variant(trained: Path, tmp_path) -> None:
    report = tmp_path / "ans_real.md"
    run_bench("bench/ans_real.py", "--trained", str(trained), "--skip-lrzip", "--skip-slow", "--skip-per-tensor",
              "--skip-36m", "--skip-minilm", "--repeats", "1", "--small-threshold", "0", "--output", str(report))
    text = report.read_text(encoding="utf-8")
    for variant in ("row classes (AKC2 model)", "auto without reference rows (AKC3 coder)",
                    "auto without prototype rows (AKC4 coder)", "auto without remainder contexts (AKC5 model)",
                    "auto (default, AKC6)"):
        assert variant in text
    summary = next(line for line in text.splitlines() if line.startswith("| trained here"))
    cells = [float(cell.strip(" *")) for cell in summary.split("|")[2:-1]]
    int6, every = cells[0:4], cells[6:10]  # AKC6, AKC5, AKC4, AKC3 of the int6 codes, then of all int codes
    assert all(0.5 < ratio < 1.2 for ratio in int6), summary
    # the micro model's tied embedding has near-duplicate rows (test below): reference rows pay
    assert every[2] < every[3], summary
    # prototype rows are only kept where they pay; where none is, the per-tensor count costs a few bytes
    assert every[1] <= every[2] + 0.0005, summary
    # remainder contexts are only used where estimated smaller (the estimate counts their tables as stored)
    assert every[0] <= every[1] + 0.0005, summary
    candidates = {line.split("|")[1].strip(): [float(cell.replace(",", "")) for cell in line.split("|")[2:-1]]
                  for line in text.splitlines() if line.startswith("| levels x the ")}
    assert set(candidates) == {"levels x the row's kurtosis quartile", "levels x the column's kurtosis quartile",
                               "levels x the row's and the column's mean tercile"}, candidates
    for codes, side, with_side, floor in candidates.values():
        assert side > 0 and with_side > codes and 0.5 < floor <= codes, candidates


def load_bench(name: str):
    sys.path.append(str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_code_spectrum_credits_planted_low_rank_structure_and_not_iid_codes() -> None:
    spectrum = load_bench("code_spectrum").spectrum
    generator = np.random.default_rng(1)
    iid = generator.integers(-8, 9, size=(512, 256)).astype(np.int8)
    direction = generator.choice([-4, 4], size=256)
    planted = np.clip(iid // 2 + generator.choice([-1, 1], size=(512, 1)) * direction, -31, 31).astype(np.int8)
    assert spectrum("iid", iid, 6, generator).saving_bits < 0.002 * spectrum("iid", iid, 6, generator).order0_bits
    measured = spectrum("planted", planted, 6, generator)
    assert measured.top1 > 0.5 and measured.shuffled1 < 0.05
    assert measured.saving_bits > 0.1 * measured.order0_bits


def test_code_spectrum_smoke_run_reports_every_int_tensor(trained: Path, tmp_path) -> None:
    state = load_checkpoint(trained).state_dict
    model = quantize_state_dict(state, dataclasses.replace(default_policy(), small_threshold=0))
    artifact = write_artifact(tmp_path / "tiny.akit", encode_artifact(model, "ans"))
    report = tmp_path / "spectrum.md"
    run_bench("bench/code_spectrum.py", "--artifact", f"tiny={artifact}", "--skip-minilm", "--output", str(report))
    text = report.read_text(encoding="utf-8")
    names = [e.name for e in model.entries if e.scheme.is_int]
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in names]
    assert len(rows) == len(names), text
    summary = next(line for line in text.splitlines() if line.startswith("| tiny"))
    assert re.search(r"\| \d+\.\d\d% \| \d+\.\d\d% \|$", summary), summary


def test_shape_classes_separate_heavy_from_light_tailed_rows() -> None:
    """The shape candidate's classes: rows of equal spread but different tails fall in different
    kurtosis quartiles, and rows of opposite sign skew in the outer mean terciles."""
    ans_real = load_bench("ans_real")
    generator = np.random.default_rng(0)
    light = generator.choice([-2, 2], size=(40, 256))  # kurtosis 1
    heavy = np.where(generator.random((40, 256)) < 0.05, 8, 0) * generator.choice([-1, 1], size=(40, 256))
    kurtosis, _ = ans_real.shape_classes(np.vstack([light, heavy]).astype(np.int8), axis=1)
    assert (kurtosis[:40] <= 1).all() and (kurtosis[40:] >= 2).all()
    skewed = np.abs(generator.integers(0, 4, size=(30, 128))) * np.array([1, -1, 0])[np.arange(30) % 3][:, None]
    _, mean = ans_real.shape_classes(skewed.T.astype(np.int8), axis=0)
    assert (mean[0::3] == 2).all() and (mean[1::3] == 0).all() and (mean[2::3] == 1).all()


def test_recode_rewrites_a_points_file_with_identical_codes(trained: Path, tmp_path) -> None:
    state = load_checkpoint(trained).state_dict
    policy = dataclasses.replace(default_policy(), small_threshold=0)
    artifact = write_artifact(tmp_path / "default.akit", encode_artifact(quantize_state_dict(state, policy), "ans"))
    size = artifact.stat().st_size
    points = {"command": "test", "points": [
        {"checkpoint": "T", "pipeline": "default", "setting": "--policy int6-mixed", "codec": "ans", "bytes": size,
         "delta_bpb": 0.001, "path": str(artifact), "extra": {"delta_se": 0.0001}}]}
    (tmp_path / "points_T.json").write_text(json.dumps(points))
    report = tmp_path / "recode.md"
    run_bench("bench/recode.py", "--points", str(tmp_path / "points_T.json"), "--output", str(report))
    row = next(line for line in report.read_text(encoding="utf-8").splitlines() if line.startswith("| default |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[2] == "+0.00100 ± 0.00010" and int(cells[3].replace(",", "")) == size
    assert re.fullmatch(r"\d\.\d{4}", cells[5]) and int(cells[4].replace(",", "")) <= size + 16


def test_reference_rows_find_the_duplicate_rows_of_a_trained_embedding(trained: Path) -> None:
    """Tokens the embedded corpus never uses keep drifting together in the tied embedding: the
    structure reference rows exist for, found in a model the real loop trained here."""
    state = load_checkpoint(trained).state_dict
    policy = dataclasses.replace(default_policy(), small_threshold=0)
    entry = next(e for e in quantize_state_dict(state, policy).entries if "emb" in e.name and e.scheme.is_int)
    codes = entry.quantized.codes.numpy()
    back = reference_rows(codes, int(entry.scheme.bits)).back
    assert (back > 0).sum() > 0.05 * len(back), (entry.name, codes.shape)
