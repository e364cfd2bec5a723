"""`report ab` on two real (micro) training logs written by the real training loop."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from artifactkit.checkpoint import load_checkpoint
from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.format.akit import pack_state_dict, write_artifact
from artifactkit.report.ab import read_log, summarize


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from train.data import prepare_embedded_corpus
    from train.loop import run_training
    from train.testing import micro_config

    root = tmp_path_factory.mktemp("ab")
    prepared = prepare_embedded_corpus(root / "corpus")
    runs = {}
    for label, jepa_weight in (("vanilla", 0.0), ("jepa", 0.3)):
        config = micro_config(root / label, prepared, iterations=4, val_every=2, jepa_weight=jepa_weight)
        result = run_training(config, console=lambda text: None)
        artifact = root / f"{label}.akit"
        write_artifact(artifact, pack_state_dict(load_checkpoint(result.checkpoint).state_dict))
        runs[label] = (root / label / "log.jsonl", artifact)
    return root, runs


def test_ab_report_from_two_real_logs(two_runs):
    root, runs = two_runs
    (log_a, artifact_a), (log_b, artifact_b) = runs["vanilla"], runs["jepa"]
    roundtrip = root / "roundtrip_b.json"  # the documented keys of 'roundtrip-eval --json'
    roundtrip.write_text(json.dumps({"val_bpb_fp": 3.0, "val_bpb_q": 3.01, "delta_bpb": 0.01, "tokens": 2048}))
    output = root / "reports" / "micro_ab"
    result = CliRunner().invoke(main, ["report", "ab", str(log_a), str(log_b), "--label-a", "vanilla",
                                       "--label-b", "jepa", "--artifact-a", str(artifact_a), "--artifact-b",
                                       str(artifact_b), "--roundtrip-b", str(roundtrip), "-o", str(output), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    a, b = document["a"], document["b"]
    rows = [json.loads(line) for line in log_a.read_text().splitlines()]
    assert a["steps"] == b["steps"] == 4
    assert a["val_bpb"] == [r for r in rows if "val_bpb" in r][-1]["val_bpb"]
    assert a["wall_s"] == max(r["elapsed_s"] for r in rows)
    assert a["artifact_bytes"] == artifact_a.stat().st_size and b["roundtrip_bpb"] == 3.01
    assert a["roundtrip_bpb"] is None

    markdown = (root / "reports" / "micro_ab.md").read_text(encoding="utf-8")
    assert "| steps | 4 | 4 | +0 |" in markdown and "](micro_ab.png)" in markdown
    assert f"| artifact bytes | {artifact_a.stat().st_size:,} | {artifact_b.stat().st_size:,} |" in markdown
    assert "| val_bpb float, roundtrip tokens | - | 3.0000 | - |" in markdown
    assert "| val_bpb after roundtrip | - | 3.0100 | - |" in markdown
    png = (root / "reports" / "micro_ab.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[-8:-4] == b"IEND" and len(png) > 20_000


def test_ab_report_rejects_a_log_that_is_not_json_lines(two_runs, tmp_path):
    _, runs = two_runs
    broken = tmp_path / "log.jsonl"
    broken.write_text(runs["vanilla"][0].read_text().splitlines()[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"log.jsonl:2: not a JSON object"):
        read_log(broken, "A")
    result = CliRunner().invoke(main, ["report", "ab", str(broken), str(runs["jepa"][0]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error:" in result.stderr and not (tmp_path / "x.md").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"note": 1}\n')
    with pytest.raises(InputError, match="no training rows"):
        summarize(read_log(empty, "A"))


def test_regression_run_shorter_than_its_log_interval_still_reports(tmp_path):
    """The demo's JEPA run once finished 7 steps with --log-every 10: only its final row."""
    short = tmp_path / "short.jsonl"
    short.write_text('{"step": 7, "loss": 6.16, "elapsed_s": 60.1, "val_loss": 6.66, "val_bpb": 3.82, '
                     '"final": true, "weights": "ema"}\n', encoding="utf-8")
    summary = summarize(read_log(short, "B"))
    assert summary.val_bpb == pytest.approx(3.82) and summary.final_loss == pytest.approx(6.16)
