"""A/B report of two training runs: their JSON-lines logs (from `train`), optionally their
artifacts and roundtrip-eval JSON, turned into one markdown table and one PNG of loss
and val_bpb against wall clock. Reads what the logs say and computes nothing new, except
the number of validation tokens the trainer scored (from `run.json` beside the log and
the shards, read once and hashed), so the report can say which tokens each val_bpb row was measured on.

Log rows (one JSON object per line): training rows carry `step`, `loss`, `elapsed_s`
and `step_ms`; validation rows add `val_loss` / `val_bpb`; the last row may be
`"final": true` (the weights the checkpoint holds, e.g. `"weights": "ema"`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from artifactkit.errors import InputError
from artifactkit.io import atomic_write_text
from eval.evaluate import standard_scored_targets
from eval.shards import ShardError, load_tokens

RUN_INFO_NAME = "run.json"  # written by `python -m train` beside log.jsonl


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


@dataclass(frozen=True)
class TokenSet:
    """Which tokens a val_bpb was measured on: `scored` targets from the first
    `scored + 1` tokens of `source`, in `window`; `digest` (sha256 of those token ids)
    tells two token sets apart when their files differ."""

    scored: int
    source: str
    window: str
    digest: str | None = None

    def describe(self) -> str:
        return f"{self.scored:,} tokens of {self.source} ({self.window})"

    def same_as(self, other: TokenSet) -> bool:
        if self.digest and other.digest:
            return (self.scored, self.window, self.digest) == (other.scored, other.window, other.digest)
        return (self.scored, self.window, self.source) == (other.scored, other.window, other.source)


def token_digest(source: str, scored: int) -> str | None:
    """sha256 of the first `scored + 1` token ids of the shards `source` (None when
    they cannot be read, e.g. a relative glob from another working directory)."""
    try:
        tokens = load_tokens(source)
    except ShardError:
        return None
    return _digest(tokens, scored)


def _digest(tokens, scored: int) -> str | None:
    if tokens.size < scored + 1:
        return None
    return hashlib.sha256(tokens[: scored + 1].astype("<u2").tobytes()).hexdigest()


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
    val_weights: str | None  # "ema", "swa(N)", "raw"; "training" when the row does not say
    best_val_bpb: float | None
    val_tokens: TokenSet | None = None  # what the trainer's validation scored (from run.json); None: unknown
    roundtrip_float_bpb: float | None = None  # the float model on the roundtrip's tokens
    roundtrip_bpb: float | None = None
    roundtrip_delta: float | None = None
    roundtrip_tokens: TokenSet | None = None
    artifact_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


def trainer_validation(log_path: str | Path) -> tuple[TokenSet | None, str | None]:
    """(the tokens the trainer's validation scored, why unknown) from the run.json beside
    the log: the first `val_tokens` + 1 tokens of `val_glob` (all when 0), in standard
    windows of `seq_len`, as `train.loop` evaluates them."""
    info_path = Path(log_path).with_name(RUN_INFO_NAME)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        config = info["train_config"]
        val_glob, seq_len, limit = str(info["val_glob"]), int(config["seq_len"]), int(config.get("val_tokens") or 0)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None, f"no readable {RUN_INFO_NAME} beside the log"
    try:
        tokens = load_tokens(val_glob)  # read once: counted and hashed
    except ShardError as exc:
        return None, f"the shards of {val_glob} cannot be read ({exc})"
    used = min(int(tokens.size), limit + 1) if limit else int(tokens.size)
    scored = standard_scored_targets(used, seq_len)
    return TokenSet(scored, val_glob, f"standard, seq_len {seq_len:,}", _digest(tokens, scored)), None


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
        val_weights=str(last_val.get("weights", "training")) if last_val else None,
        best_val_bpb=min(float(r["val_bpb"]) for r in vals) if vals else None,
    )
    if vals:
        summary.val_tokens, unknown = trainer_validation(log.path)
        if unknown:
            summary.notes.append(f"trainer's validation tokens unknown: {unknown}")
    if artifact is not None:
        summary.artifact_bytes = Path(artifact).stat().st_size
    if roundtrip is not None:
        document = read_roundtrip(roundtrip)
        summary.roundtrip_bpb = float(document["val_bpb_q"])
        summary.roundtrip_float_bpb = _number(document.get("val_bpb_fp"))
        summary.roundtrip_delta = _number(document.get("delta_bpb"))
        tokens, seq_len, stride = document.get("tokens"), document.get("seq_len"), document.get("stride")
        if isinstance(tokens, int) and isinstance(seq_len, int) and isinstance(document.get("val"), str):
            window = f"{document.get('mode', 'standard')}, seq_len {seq_len:,}"
            window += f", stride {stride:,}" if isinstance(stride, int) else ""
            summary.roundtrip_tokens = TokenSet(tokens, document["val"], window, token_digest(document["val"], tokens))
        else:
            summary.notes.append(f"roundtrip-eval's tokens unknown: {roundtrip} lacks tokens / seq_len / val")
        summary.notes.append(f"roundtrip: {document.get('artifact', roundtrip)}")
    return summary


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _delta(a: float | int | None, b: float | int | None, spec: str) -> str:
    return "-" if a is None or b is None else format(b - a, "+" + spec)


def _scored(tokens: TokenSet | None) -> int | None:
    return None if tokens is None else tokens.scored


def _weights_text(a: RunSummary, b: RunSummary) -> str:
    """Which weights the last validation row scored, e.g. 'ema weights' or 'A ema, B raw weights'."""
    if a.val_weights == b.val_weights:
        return f"{a.val_weights or '-'} weights"
    return f"A {a.val_weights or '-'}, B {b.val_weights or '-'} weights"


def ab_rows(a: RunSummary, b: RunSummary) -> list[tuple[str, str, str, str]]:
    specs = [
        ("steps", a.steps, b.steps, ",d"),
        ("wall clock (s)", a.wall_s, b.wall_s, ".1f"),
        ("step time, median (ms)", a.step_ms_median, b.step_ms_median, ".1f"),
        ("tokens/s, median", a.tokens_per_s_median, b.tokens_per_s_median, ",.0f"),
        ("final training loss", a.final_loss, b.final_loss, ".4f"),
        ("trainer's validation: tokens scored", _scored(a.val_tokens), _scored(b.val_tokens), ",d"),
        (f"trainer's validation: val_bpb at the end ({_weights_text(a, b)})", a.val_bpb, b.val_bpb, ".4f"),
        ("trainer's validation: best val_bpb in the log", a.best_val_bpb, b.best_val_bpb, ".4f"),
        ("roundtrip-eval: tokens scored", _scored(a.roundtrip_tokens), _scored(b.roundtrip_tokens), ",d"),
        ("roundtrip-eval: val_bpb float", a.roundtrip_float_bpb, b.roundtrip_float_bpb, ".4f"),
        ("roundtrip-eval: val_bpb after roundtrip", a.roundtrip_bpb, b.roundtrip_bpb, ".4f"),
        ("roundtrip-eval: delta_bpb", a.roundtrip_delta, b.roundtrip_delta, "+.4f"),
        ("artifact bytes", a.artifact_bytes, b.artifact_bytes, ",d"),
    ]
    return [(name, _fmt(x, spec), _fmt(y, spec), _delta(x, y, spec.lstrip("+"))) for name, x, y, spec in specs]


def token_sets_text(a: RunSummary, b: RunSummary) -> str:
    """Which tokens each group of val_bpb rows was measured on, and which rows compare."""
    groups = {"trainer's validation": [(a, a.val_tokens, a.val_bpb), (b, b.val_tokens, b.val_bpb)],
              "roundtrip-eval": [(a, a.roundtrip_tokens, a.roundtrip_bpb), (b, b.roundtrip_tokens, b.roundtrip_bpb)]}
    lines = []
    measured: dict[str, list[TokenSet]] = {}
    for group, runs in groups.items():
        for summary, tokens, value in runs:
            if value is None:
                continue
            lines.append(f"- {group}, {summary.label}: "
                         + (tokens.describe() if tokens else "tokens not recorded"))
            if tokens:
                measured.setdefault(group, []).append(tokens)
    if not lines:
        return "No val_bpb rows."
    verdicts = []
    for group, sets in measured.items():
        if len(sets) == 2:
            verdicts.append(f"{group}: A and B {'were' if sets[0].same_as(sets[1]) else 'were NOT'} measured on "
                            "the same tokens and window.")
    across = [t for sets in measured.values() for t in sets]
    if len(measured) == 2 and not all(across[0].same_as(t) for t in across[1:]):
        verdicts.append("The trainer's rows and the roundtrip-eval rows were measured on different tokens or "
                        "windows: compare within a group (A with B), never a trainer row with a roundtrip-eval row.")
    return "\n".join(["Tokens each val_bpb was measured on:", *lines, "", *verdicts])


def ab_markdown(a: RunSummary, b: RunSummary, title: str, plot_name: str) -> str:
    lines = [f"# {title}", "", f"A = **{a.label}** (`{a.log}`), B = **{b.label}** (`{b.log}`).", "",
             f"| | {a.label} | {b.label} | B - A |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {x} | {y} | {d} |" for name, x, y, d in ab_rows(a, b)]
    lines += ["", f"![loss and val_bpb vs wall clock]({plot_name})", "",
              token_sets_text(a, b), "",
              "The trainer's val_bpb at the end is the last validation row of each log, on the weights it names "
              "(the averaged weights the checkpoint holds when the log marks them). "
              "Step time and tokens/s are medians over logged steps after the first (compilation / warm-up). "
              "The plot's training loss is smoothed (an exponential moving average; the raw logged values are "
              "drawn faintly behind it). "
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
