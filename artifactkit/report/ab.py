"""A/B report of two training runs: their JSON-lines logs (from `train`), optionally their
artifacts and roundtrip-eval JSON, turned into one markdown table and one PNG of loss
and val_bpb against wall clock. Reads only what the logs say; computes nothing new.

Log rows (one JSON object per line): training rows carry `step`, `loss`, `elapsed_s`
and `step_ms`; validation rows add `val_loss` / `val_bpb`; the last row may be
`"final": true` (the weights the checkpoint holds, e.g. `"weights": "ema"`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifactkit.errors import InputError
from artifactkit.io import atomic_write_text


@dataclass
class RunLog:
    label: str
    path: str
    rows: list[dict[str, Any]]

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        rows = [r for r in self.rows if "loss" in r and "elapsed_s" in r]
        # A run shorter than its log interval has only its final row: report that rather than nothing.
        return [r for r in rows if not r.get("final")] or rows

    @property
    def val_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "val_bpb" in r and "elapsed_s" in r]


@dataclass
class RunSummary:
    label: str
    log: str
    steps: int
    wall_s: float
    step_ms_median: float | None
    tokens_per_s_median: float | None
    final_loss: float | None
    val_bpb: float | None  # last validation row (the final one when the log has it)
    val_weights: str | None
    best_val_bpb: float | None
    roundtrip_float_bpb: float | None = None  # the float model on the roundtrip's tokens
    roundtrip_bpb: float | None = None
    roundtrip_delta: float | None = None
    artifact_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_log(path: str | Path, label: str) -> RunLog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the log ({exc.strerror}); pass RUN_DIR/log.jsonl from train") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text; pass RUN_DIR/log.jsonl from train") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not a JSON object ({exc.msg}); pass the JSON-lines log.jsonl "
                             "written by train") from exc
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: holds a JSON {type(row).__name__}, not an object; pass the "
                             "log.jsonl written by train")
        rows.append(row)
    log = RunLog(label, str(path), rows)
    if not log.train_rows:
        raise InputError(f"{path}: no training rows (objects with step, loss, elapsed_s); pass the log.jsonl "
                         "written by train")
    return log


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_roundtrip(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable roundtrip-eval JSON document ({exc}); write it with "
                         "'artifactkit roundtrip-eval ... --json > FILE'") from exc
    if not isinstance(document, dict) or _number(document.get("val_bpb_q")) is None:
        raise InputError(f"{path}: has no val_bpb_q; write it with 'artifactkit roundtrip-eval ... --json > FILE'")
    return document


def summarize(log: RunLog, artifact: str | Path | None = None, roundtrip: str | Path | None = None) -> RunSummary:
    train = log.train_rows
    step_ms = [v for v in (_number(r.get("step_ms")) for r in train[1:] or train) if v is not None]
    rates = [v for v in (_number(r.get("tokens_per_s")) for r in train[1:] or train) if v is not None]
    vals = log.val_rows
    last_val = vals[-1] if vals else None
    summary = RunSummary(
        label=log.label, log=log.path,
        steps=max(int(r.get("step", 0)) for r in log.rows if isinstance(r.get("step"), int)),
        wall_s=max(float(r["elapsed_s"]) for r in log.rows if _number(r.get("elapsed_s")) is not None),
        step_ms_median=statistics.median(step_ms) if step_ms else None,
        tokens_per_s_median=statistics.median(rates) if rates else None,
        final_loss=_number(train[-1].get("loss")),
        val_bpb=_number(last_val["val_bpb"]) if last_val else None,
        val_weights=str(last_val.get("weights", "live")) if last_val else None,
        best_val_bpb=min(float(r["val_bpb"]) for r in vals) if vals else None,
    )
    if artifact is not None:
        summary.artifact_bytes = Path(artifact).stat().st_size
    if roundtrip is not None:
        document = read_roundtrip(roundtrip)
        summary.roundtrip_bpb = float(document["val_bpb_q"])
        summary.roundtrip_float_bpb = _number(document.get("val_bpb_fp"))
        summary.roundtrip_delta = _number(document.get("delta_bpb"))
        tokens = document.get("tokens")
        summary.notes.append(f"roundtrip: {document.get('artifact', '?')}, {tokens:,} tokens" if isinstance(tokens, int)
                             else f"roundtrip: {roundtrip}")
    return summary


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _delta(a: float | int | None, b: float | int | None, spec: str) -> str:
    return "-" if a is None or b is None else format(b - a, "+" + spec)


def ab_rows(a: RunSummary, b: RunSummary) -> list[tuple[str, str, str, str]]:
    specs = [
        ("steps", a.steps, b.steps, ",d"),
        ("wall clock (s)", a.wall_s, b.wall_s, ".1f"),
        ("step time, median (ms)", a.step_ms_median, b.step_ms_median, ".1f"),
        ("tokens/s, median", a.tokens_per_s_median, b.tokens_per_s_median, ",.0f"),
        ("final training loss", a.final_loss, b.final_loss, ".4f"),
        (f"val_bpb live ({a.val_weights or '-'} / {b.val_weights or '-'} weights)", a.val_bpb, b.val_bpb, ".4f"),
        ("best val_bpb in the log", a.best_val_bpb, b.best_val_bpb, ".4f"),
        ("val_bpb float, roundtrip tokens", a.roundtrip_float_bpb, b.roundtrip_float_bpb, ".4f"),
        ("val_bpb after roundtrip", a.roundtrip_bpb, b.roundtrip_bpb, ".4f"),
        ("roundtrip delta_bpb", a.roundtrip_delta, b.roundtrip_delta, "+.4f"),
        ("artifact bytes", a.artifact_bytes, b.artifact_bytes, ",d"),
    ]
    return [(name, _fmt(x, spec), _fmt(y, spec), _delta(x, y, spec.lstrip("+"))) for name, x, y, spec in specs]


def ab_markdown(a: RunSummary, b: RunSummary, title: str, plot_name: str) -> str:
    lines = [f"# {title}", "", f"A = **{a.label}** (`{a.log}`), B = **{b.label}** (`{b.log}`).", "",
             f"| | {a.label} | {b.label} | B - A |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {x} | {y} | {d} |" for name, x, y, d in ab_rows(a, b)]
    lines += ["", f"![loss and val_bpb vs wall clock]({plot_name})", "",
              "Step time and tokens/s are medians over logged steps after the first (compilation / warm-up). "
              "val_bpb live is the last validation row of each log (the final weights when the log marks them); "
              "the roundtrip rows come from roundtrip-eval, whose tokens and window may differ from the "
              "trainer's validation, so compare them with each other, not with val_bpb live. "
              "Wall clock is the trainer's own elapsed_s; runs on a shared machine are only comparable when they "
              "ran under the same load."]
    notes = [f"- {s.label}: {n}" for s in (a, b) for n in s.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def ab_report_paths(output: str | Path) -> tuple[Path, Path]:
    """NAME.md and NAME.png for `-o NAME` (a given .md / .png suffix is dropped first)."""
    base = Path(output)
    if base.suffix in (".md", ".png"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".md"), base.with_name(base.name + ".png")


def write_ab_report(a_log: RunLog, b_log: RunLog, a: RunSummary, b: RunSummary, output: str | Path,
                    title: str | None = None) -> tuple[Path, Path]:
    """Write OUTPUT.md and OUTPUT.png (atomically); returns their paths."""
    from artifactkit.report.plots import loss_curves_figure

    markdown_path, png_path = ab_report_paths(output)
    title = title or f"A/B: {a.label} vs {b.label}"
    series = []
    for log in (a_log, b_log):
        train, vals = log.train_rows, log.val_rows
        series.append((log.label, [float(r["elapsed_s"]) for r in train], [float(r["loss"]) for r in train],
                       [float(r["elapsed_s"]) for r in vals], [float(r["val_bpb"]) for r in vals]))
    loss_curves_figure(series, png_path, title)
    atomic_write_text(markdown_path, ab_markdown(a, b, title, png_path.name))
    return markdown_path, png_path
