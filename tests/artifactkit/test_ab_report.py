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
from eval.shards import load_tokens


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
    assert "| roundtrip-eval: val_bpb float | - | 3.0000 | - |" in markdown
    assert "| roundtrip-eval: val_bpb after roundtrip | - | 3.0100 | - |" in markdown
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


def test_regression_report_says_which_tokens_each_val_bpb_row_used(two_runs):
    """Bug: the report put the trainer's val_bpb and roundtrip-eval's side by side without
    saying they were measured on different token sets, and labelled the trainer's row
    "val_bpb live (ema / ema weights)" (live and ema at once)."""
    from artifactkit.report.ab import ab_markdown, ab_rows, token_digest

    root, runs = two_runs
    (log_a, _), (log_b, _) = runs["vanilla"], runs["jepa"]
    info = json.loads((log_a.parent / "run.json").read_text())
    seq_len, limit = info["train_config"]["seq_len"], info["train_config"]["val_tokens"]
    available = load_tokens(info["val_glob"]).size
    used = min(available, limit + 1) if limit else available
    trainer_scored = (used - 1) // seq_len * seq_len
    roundtrips = []
    for name, tokens in (("a", 256), ("b", 256)):  # what 'roundtrip-eval --max-tokens 256 --json' writes
        path = root / f"roundtrip_{name}.json"
        path.write_text(json.dumps({"val_bpb_fp": 3.0, "val_bpb_q": 3.01, "delta_bpb": 0.01, "tokens": tokens,
                                    "mode": "standard", "seq_len": 64, "stride": None, "val": info["val_glob"]}))
        roundtrips.append(path)
    a = summarize(read_log(log_a, "vanilla"), roundtrip=roundtrips[0])
    b = summarize(read_log(log_b, "jepa"), roundtrip=roundtrips[1])
    assert a.val_tokens.scored == trainer_scored and a.val_tokens.window == f"standard, seq_len {seq_len:,}"
    assert a.val_tokens.digest == token_digest(info["val_glob"], trainer_scored)
    assert a.roundtrip_tokens.scored == 256 and a.roundtrip_tokens.window == "standard, seq_len 64"
    rows = {name: (x, y) for name, x, y, _ in ab_rows(a, b)}
    assert rows["trainer's validation: tokens scored"] == (f"{trainer_scored:,}", f"{trainer_scored:,}")
    assert rows["roundtrip-eval: tokens scored"] == ("256", "256")
    assert not any("live" in name for name in rows)
    weights = a.val_weights
    assert f"trainer's validation: val_bpb at the end ({weights} weights)" in rows
    markdown = ab_markdown(a, b, "t", "t.png")
    assert f"- trainer's validation, vanilla: {trainer_scored:,} tokens of {info['val_glob']}" in markdown
    assert "trainer's validation: A and B were measured on the same tokens and window." in markdown
    assert "roundtrip-eval: A and B were measured on the same tokens and window." in markdown
    assert "measured on different tokens or windows: compare within a group" in markdown


def test_regression_loss_curve_is_smoothed_with_the_raw_values_faint(tmp_path):
    """Bug: the plot drew the raw, unsmoothed training loss (noise hides the trend)."""
    import numpy as np

    from artifactkit.report.plots import loss_curves_figure, loss_span, smoothed

    assert smoothed([2.0, 2.0, 2.0], 5).tolist() == [2.0, 2.0, 2.0]  # bias-corrected: no pull towards 0
    assert smoothed([4.0, 0.0], 3)[0] == 4.0
    noisy = 5.0 - np.linspace(0, 1, 400) + np.random.default_rng(0).normal(0, 0.3, 400)
    smooth = smoothed(noisy, loss_span(len(noisy)))
    assert loss_span(400) == 20 and loss_span(10) == 2
    assert np.abs(np.diff(smooth)).mean() < 0.2 * np.abs(np.diff(noisy)).mean()
    assert abs(smooth[-50:].mean() - (5.0 - np.linspace(0, 1, 400))[-50:].mean()) < 0.1

    import matplotlib.pyplot as plt

    drawn = {}
    original = plt.close

    def keep(figure):  # look at the figure before it is closed
        drawn["lines"] = [(line.get_label(), line.get_alpha()) for line in figure.axes[0].lines]
        original(figure)

    plt.close = keep
    try:
        loss_curves_figure([("run", list(range(400)), noisy.tolist(), [], [])], tmp_path / "p.png", "t")
    finally:
        plt.close = original
    assert drawn["lines"][0][1] == 0.25  # the raw values, faint
    assert drawn["lines"][1][0] == "run (EMA, span 20 logged steps)" and drawn["lines"][1][1] is None
