"""The submission audit: check a record folder (README.md, submission.json, train_gpt.py,
one log per seed, maybe helper modules) the way the challenge organizers do. Logs are
read by `audit_logs`, code bytes recomputed by `audit_code`, statistics come from
`audit_stats`; this module owns the checks (each a named problem kind in
`PROBLEM_KINDS`), the comparison with submission.json and the JSON document."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from artifactkit.budget import CODE_RULES, DEFAULT_BUDGET, RULE_TEXT
from artifactkit.errors import InputError, describe
from artifactkit.report.audit_code import ENTRY_SCRIPT, CodeReport, account_code
from artifactkit.report.audit_logs import RunLog, find_logs
from artifactkit.report.audit_stats import mean_and_std, welch_one_sided

TIME_LIMIT_S = 600.0
MIN_SEEDS = 3
CAP_OVERSHOOT_STEPS = 2  # how far past the cap a wallclock-capped loop may stop, in steps

PROBLEM_KINDS = {
    "over_budget": "a seed's artifact bytes (from its log) plus the recomputed code bytes exceed the budget",
    "too_few_seeds": f"fewer than {MIN_SEEDS} seeds: a record needs {MIN_SEEDS} runs to show its gain is not noise",
    "hyperparameters_differ": "the seeds ran with different settings; every seed must run the submitted configuration",
    "val_tokens_differ": "the seeds were scored on different numbers of validation tokens (a partial or other "
                         "validation set)",
    "train_shards_differ": "the seeds trained on different numbers of shards: the data was prepared differently "
                           "(1,499 shards where a clean run has 80 once meant validation text in training)",
    "submission_json_mismatch": "submission.json states a value the logs do not support within its rounding",
    "submission_json_unreadable": "submission.json is missing or is not valid JSON",
    "time_over_limit": f"training (plus calibration on training data after the loop) or an evaluation took over "
                       f"{TIME_LIMIT_S:.0f} s, or a time the log checks against its own limit exceeded it",
    "uncounted_code": "local code the entry script imports or opens is not in the code bytes the log counted",
    "code_mismatch": "the code size a log reports is not the size of the code that ships: those runs used other code",
    "code_unreadable": "shipped code could not be parsed or decoded, so its imports were not followed",
    "entry_missing": f"the folder has no {ENTRY_SCRIPT}",
    "duplicate_seed": "a seed has several logs with different results and submission.json does not say which "
                      "one is the submission",
    "seed_label_mismatch": "a log's file name names another seed than the one the log prints",
    "seed_unknown": "a log prints no seed and its file name names none",
    "not_reported": "a log does not report a number a check needs (artifact bytes, val_bpb)",
}

# Printed settings that differ between seeds by design, with the reason they are not compared.
RUN_IDENTITY_KEYS = {
    "seed": "differs between seeds by design",
    "run_id": "the run's name",
    "logfile": "where the run wrote its log",
    "artifact_dir": "where the run wrote its files",
    "rank": "the process that printed", "local_rank": "the process that printed",
    "is_main_process": "the process that printed",
    "train_shards": "checked on its own (train_shards_differ)",
    "tokens": "the validation token count, checked on its own (val_tokens_differ)",
    "val_tokens": "checked on its own (val_tokens_differ)",
}


@dataclass
class Problem:
    kind: str
    message: str
    log: str | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "explanation": PROBLEM_KINDS[self.kind], "message": self.message, "log": self.log}


@dataclass
class Audit:
    folder: Path
    budget: int
    code_rule: str
    runs: list[RunLog]
    primary: list[RunLog]  # one run per seed: the submission's seeds
    code: CodeReport
    ignored_files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    claims_checked: list[str] = field(default_factory=list)
    claims_unchecked: list[str] = field(default_factory=list)
    claims_one_seed: dict[str, str] = field(default_factory=dict)  # top-level claims one log gives, not the mean

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def headline_name(self) -> str | None:
        names = Counter(r.headline.name for r in self.primary if r.headline)
        return names.most_common(1)[0][0] if names else None

    def code_bytes(self, run: RunLog) -> int | None:
        """Recomputed code bytes; without an entry script, what the log counted."""
        return self.code.counted_bytes if self.code.entry else run.code_bytes_counted_by_log

    def evaluation_stats(self) -> dict[str, dict]:
        names = list(dict.fromkeys(e.name for r in self.primary for e in r.evaluations))
        stats = {}
        for name in names:
            found = [r.evaluation(name) for r in self.primary if r.evaluation(name)]
            bpb_mean, bpb_std = mean_and_std([e.val_bpb for e in found])
            loss_mean, loss_std = mean_and_std([e.val_loss for e in found])
            stats[name] = {"n": len(found), "seeds": [r.seed for r in self.primary if r.evaluation(name)],
                           "mean_bpb": bpb_mean, "std_bpb": bpb_std, "mean_loss": loss_mean, "std_loss": loss_std}
        return stats

    def run_json(self, run: RunLog) -> dict:
        code_bytes = self.code_bytes(run)
        total = run.artifact_bytes + code_bytes if run.artifact_bytes is not None and code_bytes is not None else None
        return {**run.to_json(), "role": "seed" if run in self.primary else "extra run",
                "code_bytes": code_bytes, "recomputed_total_bytes": total,
                "headroom": self.budget - total if total is not None else None}

    def summary(self) -> dict:
        return {
            "folder": str(self.folder), "budget": self.budget, "code_rule": self.code_rule,
            "code_rule_text": RULE_TEXT[self.code_rule], "seeds": [r.seed for r in self.primary],
            "extra_runs": [r.name for r in self.runs if r not in self.primary],
            "ignored_files": self.ignored_files, "headline": self.headline_name,
            "evaluations": self.evaluation_stats(),
            "submission_json": {"checked": self.claims_checked, "unchecked": self.claims_unchecked,
                                "one_seed_not_mean": self.claims_one_seed},
            "problem_counts": dict(Counter(p.kind for p in self.problems)),
        }

    def to_json(self, against: dict | None = None) -> dict:
        summary = self.summary()
        summary["against"] = against
        return {"seeds": [self.run_json(r) for r in self.runs], "code": self.code.to_json(),
                "problems": [p.to_json() for p in self.problems], "summary": summary, "ok": self.ok}


# ---- submission.json ----------------------------------------------------------------

Quantity = Callable[[RunLog], list[tuple[float, int | None]]]  # (value, decimals the log printed)


def _one(value: float | int | None, decimals: int | None) -> list[tuple[float, int | None]]:
    return [] if value is None else [(float(value), decimals)]


def _evaluation_values(run: RunLog, metric: str) -> list[tuple[float, int | None]]:
    return [(getattr(e, f"val_{metric}"), getattr(e, f"{metric}_decimals")) for e in run.evaluations]


QUANTITIES: dict[str, Quantity] = {
    "headline_bpb": lambda r: _one(r.headline and r.headline.val_bpb, r.headline and r.headline.bpb_decimals),
    "headline_loss": lambda r: _one(r.headline and r.headline.val_loss, r.headline and r.headline.loss_decimals),
    "pre_quant_bpb": lambda r: _one(r.pre_quant and r.pre_quant.val_bpb, r.pre_quant and r.pre_quant.bpb_decimals),
    "pre_quant_loss": lambda r: _one(r.pre_quant and r.pre_quant.val_loss, r.pre_quant and r.pre_quant.loss_decimals),
    "any_bpb": lambda r: _evaluation_values(r, "bpb"),
    "any_loss": lambda r: _evaluation_values(r, "loss"),
    "total_bytes": lambda r: _one(r.total_bytes, 0),
    "artifact_bytes": lambda r: _one(r.artifact_bytes, 0),
    "log_code_bytes": lambda r: _one(r.code_bytes_counted_by_log, 0),
    "steps": lambda r: _one(r.steps, 0),
    "train_time": lambda r: _one(r.train_time_s, 3),
    "eval_time": lambda r: _one(r.headline and r.headline.eval_time_s, 3) + _one(r.total_eval_time_s, 1),
}

# submission.json key -> the log quantities that may support it (first match wins), with the reason.
CLAIM_RULES: list[tuple[str, tuple[str, ...], str]] = [
    (r"val_bpb", ("headline_bpb",), "the score: the last evaluation the log reports"),
    (r"val_loss", ("headline_loss",), "the score's loss"),
    (r"pre_quant_val_bpb", ("pre_quant_bpb",), "the pre-quantization evaluation (or last training validation)"),
    (r"pre_quant_val_loss", ("pre_quant_loss",), "the pre-quantization loss"),
    (r"\w+_val_bpb", ("any_bpb",), "another named evaluation"),
    (r"\w+_val_loss", ("any_loss",), "another named evaluation"),
    (r"bytes_total|total_bytes", ("total_bytes",), "the log's artifact + code total"),
    (r"bytes_code|code_bytes", ("log_code_bytes",), "the code bytes the log counted"),
    (r"bytes_model\w*|model_bytes", ("artifact_bytes",), "the compressed model"),
    (r"artifact_bytes", ("total_bytes", "artifact_bytes"), "records use it for the total and for the model"),
    (r"steps?|step_stop", ("steps",), "the last training step"),
    (r"wallclock_seconds|train_time_s|train_time_seconds", ("train_time",), "the training loop's time"),
    (r"eval_time_s|eval_time_seconds", ("eval_time",), "the score's evaluation time"),
]


def _claim_quantities(key: str) -> tuple[str, ...] | None:
    for pattern, quantities, _reason in CLAIM_RULES:
        if re.fullmatch(pattern, key):
            return quantities
    return None


def _agrees(claim: Decimal | int, value: float, value_decimals: int | None, is_mean: bool) -> bool:
    """Within the claim's rounding, plus the log's rounding. A mean may be the mean of
    values already rounded to the claim's digits, so it gets one more unit of rounding."""
    claim_decimals = max(-claim.as_tuple().exponent, 0) if isinstance(claim, Decimal) else 0
    unit = 10.0 ** -claim_decimals
    tolerance = (unit if is_mean else 0.5 * unit) + 1e-9 * abs(value)
    if value_decimals is not None and (is_mean or claim_decimals > value_decimals):
        tolerance += 0.5 * 10.0 ** -value_decimals
    return abs(float(claim) - value) <= tolerance


def _supported(claim: Any, runs: list[RunLog], quantities: tuple[str, ...], allow_mean: bool
               ) -> tuple[bool | None, float | None, str | None]:
    """(agrees?, the closest value, what agreed: "mean" or a log's name); agrees is None
    when no log reports the quantity. The mean is preferred when both agree."""
    if isinstance(claim, bool) or not isinstance(claim, (Decimal, int)):
        return None, None, None
    candidates: list[tuple[float, int | None, str]] = []
    for name in quantities:
        per_run = [QUANTITIES[name](r) for r in runs]
        firsts = [values[0] for values in per_run if values]
        if allow_mean and len(firsts) > 1 and len(firsts) == len(runs):
            candidates.append((sum(v for v, _ in firsts) / len(firsts),
                               max((d for _, d in firsts if d is not None), default=None), "mean"))
        candidates += [(v, d, run.name) for run, values in zip(runs, per_run, strict=True) for v, d in values]
    if not candidates:
        return None, None, None
    closest = min(candidates, key=lambda c: abs(float(claim) - c[0]))[0]
    agreeing = [label for v, d, label in candidates if _agrees(claim, v, d, label == "mean")]
    return bool(agreeing), closest, agreeing[0] if agreeing else None


def _seed_results(document: Any, path: str = "") -> list[tuple[str, dict]]:
    """Every `seed_results` mapping in the document, with its JSON path."""
    found = []
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else key
            if key == "seed_results" and isinstance(value, dict):
                found.append((where, value))
            else:
                found += _seed_results(value, where)
    return found


def _nested_scalars(document: dict, path: str) -> list[str]:
    """Paths of the values in a nested mapping (outside seed_results), which are not checked."""
    found = []
    for key, value in document.items():
        if key == "seed_results":
            continue
        found += _nested_scalars(value, f"{path}.{key}") if isinstance(value, dict) else [f"{path}.{key}"]
    return found


def _matching(entry: dict, runs: list[RunLog]) -> tuple[RunLog | None, int]:
    """The run that agrees with most of a seed_results entry, and how many disagree."""
    best, best_misses = None, None
    for run in runs:
        misses = sum(1 for key, claim in entry.items() if (q := _claim_quantities(key))
                     and _supported(claim, [run], q, allow_mean=False)[0] is False)
        if best_misses is None or misses < best_misses:
            best, best_misses = run, misses
    return best, best_misses or 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.8g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def read_submission_json(folder: Path) -> tuple[Any, Problem | None]:
    path = folder / "submission.json"
    if not path.is_file():
        return None, Problem("submission_json_unreadable", describe(path, "not found",
                                                                    "add the leaderboard metadata the records carry"))
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, Problem("submission_json_unreadable", describe(path, f"not valid JSON ({exc})",
                                                                    "fix the file so json.load reads it"))


def choose_primary(runs: list[RunLog], document: Any, problems: list[Problem]) -> list[RunLog]:
    """One run per seed. A seed with several different logs takes the one submission.json's
    top-level seed_results describes; without such an entry that is a duplicate_seed problem."""
    top = document.get("seed_results") if isinstance(document, dict) else None
    by_seed: dict[int, list[RunLog]] = {}
    for run in runs:
        if run.seed is not None:
            by_seed.setdefault(run.seed, []).append(run)
    primary = []
    for seed, candidates in by_seed.items():
        entry = top.get(str(seed)) if isinstance(top, dict) else None
        if len(candidates) == 1:
            primary.append(candidates[0])
        elif isinstance(entry, dict):
            primary.append(_matching(entry, candidates)[0])
        else:
            problems.append(Problem("duplicate_seed", f"seed {seed} has {len(candidates)} different logs ("
                                    + ", ".join(r.name for r in candidates) + f"); using {candidates[0].name}; keep "
                                    "one log per seed or list the submitted runs in submission.json seed_results"))
            primary.append(candidates[0])
    return sorted(primary, key=lambda r: r.seed)


def check_submission_json(audit: Audit, document: Any) -> None:
    if not isinstance(document, dict):
        return
    for key, claim in document.items():
        if key == "seed_results":
            continue  # checked per seed below
        if key == "seeds" and isinstance(claim, list):
            claimed, logged = {str(s) for s in claim}, {str(r.seed) for r in audit.primary}
            audit.claims_checked.append(key)
            if claimed != logged:
                audit.problems.append(Problem("submission_json_mismatch", (
                    f"submission.json seeds {sorted(claimed, key=int)} but the logs hold seeds "
                    f"{sorted(logged, key=int)}; add the missing logs or fix the list")))
            continue
        quantities = _claim_quantities(key)
        if quantities is None or key.endswith("_std"):
            if key.endswith("_std") and key[:-4] in ("val_bpb", "val_loss"):
                _check_std(audit, key, claim)
            elif isinstance(claim, dict):
                audit.claims_unchecked += _nested_scalars(claim, key)
            elif not isinstance(claim, list):
                audit.claims_unchecked.append(key)
            continue
        agrees, closest, matched = _supported(claim, audit.primary, quantities, allow_mean=True)
        if agrees is None:
            audit.claims_unchecked.append(key)
            continue
        audit.claims_checked.append(key)
        if matched and matched != "mean" and len(audit.primary) > 1:
            audit.claims_one_seed[key] = matched
        if not agrees:
            audit.problems.append(Problem("submission_json_mismatch", (
                f"submission.json {key} = {claim} but no seed's log (nor their mean) gives that; "
                f"closest: {_fmt(closest)}")))
    for where, results in _seed_results(document):
        for seed, entry in results.items():
            candidates = [r for r in audit.runs if str(r.seed) == str(seed)]
            if not isinstance(entry, dict):
                continue
            if not candidates:
                audit.problems.append(Problem("submission_json_mismatch",
                                              f"submission.json {where}.{seed}: no log has seed {seed}; add its log"))
                continue
            run = _matching(entry, candidates)[0]
            for key, claim in entry.items():
                quantities = _claim_quantities(key)
                if quantities is None and key in run.hyperparameters:
                    _check_setting(audit, f"{where}.{seed}.{key}", claim, run, key)
                    continue
                agrees, closest, _ = (_supported(claim, [run], quantities, allow_mean=False) if quantities
                                      else (None, None, None))
                if agrees is None:
                    audit.claims_unchecked.append(f"{where}.{seed}.{key}")
                    continue
                audit.claims_checked.append(f"{where}.{seed}.{key}")
                if not agrees:
                    audit.problems.append(Problem("submission_json_mismatch", (
                        f"submission.json {where}.{seed}.{key} = {claim} but {run.name} gives {_fmt(closest)}"),
                        run.name))


def _check_std(audit: Audit, key: str, claim: Any) -> None:
    metric = key[len("val_"):-len("_std")]
    values = [QUANTITIES[f"headline_{metric}"](r) for r in audit.primary]
    values = [v[0] for v in values if v]
    std = mean_and_std([v for v, _ in values])[1]
    if std is None or not isinstance(claim, (Decimal, int)) or isinstance(claim, bool):
        audit.claims_unchecked.append(key)
        return
    audit.claims_checked.append(key)
    if not _agrees(claim, std, max((d for _, d in values if d is not None), default=None), is_mean=True):
        audit.problems.append(Problem("submission_json_mismatch", (
            f"submission.json {key} = {claim} but the sample standard deviation over the seeds' logs is {std:.6g}")))


def _check_setting(audit: Audit, where: str, claim: Any, run: RunLog, key: str) -> None:
    audit.claims_checked.append(where)
    if not _same_setting(str(claim), run.hyperparameters[key]):
        audit.problems.append(Problem("submission_json_mismatch", (
            f"submission.json {where} = {claim} but {run.name} printed {key}: {run.hyperparameters[key]}"), run.name))


# ---- the checks ---------------------------------------------------------------------

def _same_setting(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        pass
    # a path differs between machines; the file or folder it names must not
    if "/" in a or "/" in b:
        return Path(a.rstrip("/")).name == Path(b.rstrip("/")).name
    return False


def _verb(items: list, singular: str, plural: str) -> str:
    return singular if len(items) == 1 else plural


def _seed_list(runs: list[RunLog]) -> str:
    return ", ".join(str(r.seed) for r in runs)


def check_seeds(audit: Audit) -> None:
    primary = audit.primary
    if len(primary) < MIN_SEEDS:
        audit.problems.append(Problem("too_few_seeds", (
            f"{len(primary)} seed(s) ({_seed_list(primary) or 'none'}); run at least {MIN_SEEDS} seeds and "
            "ship one log per seed")))
    differing = []
    for key in sorted({k for r in primary for k in r.hyperparameters} - set(RUN_IDENTITY_KEYS)):
        values = [r.hyperparameters.get(key) for r in primary]
        first = values[0]
        if any(v is None or first is None or not _same_setting(v, first) for v in values[1:]):
            groups: dict[str, list[RunLog]] = {}
            for run, value in zip(primary, values, strict=True):
                groups.setdefault("(not printed)" if value is None else value, []).append(run)
            differing.append(f"{key} (" + "; ".join(f"seed {_seed_list(g)}: {v}" for v, g in groups.items()) + ")")
    if differing:
        audit.problems.append(Problem("hyperparameters_differ", (
            f"{len(differing)} setting(s) differ between seeds: " + ", ".join(differing))))
    for attribute, kind, what in (("val_tokens", "val_tokens_differ", "validation tokens"),
                                  ("train_shards", "train_shards_differ", "train shards")):
        groups = {}
        for run in primary:
            if getattr(run, attribute) is not None:
                groups.setdefault(getattr(run, attribute), []).append(run)
        if len(groups) > 1:
            audit.problems.append(Problem(kind, f"{what} differ between seeds: " + "; ".join(
                f"{value:,} (seed {_seed_list(runs)})" for value, runs in groups.items())))
    for run in audit.runs:
        if run.seed is None:
            audit.problems.append(Problem("seed_unknown", f"{run.name} prints no seed and its name has none; print "
                                          "the seed in the log or name the file train_seed<N>.log", run.name))
        elif run.log_seed is not None and run.name_seed is not None and run.log_seed != run.name_seed:
            audit.problems.append(Problem("seed_label_mismatch", (
                f"{run.name} is named for seed {run.name_seed} but printed seed {run.log_seed}; rename it"), run.name))


def check_budget(audit: Audit) -> None:
    for run in audit.runs:
        label = f"seed {run.seed} ({run.name})"
        if run.artifact_bytes is None:
            audit.problems.append(Problem("not_reported", f"{run.name} reports no compressed artifact size, so its "
                                          "budget cannot be checked; log the serialized artifact's bytes", run.name))
            continue
        if run.headline is None:
            audit.problems.append(Problem("not_reported", f"{run.name} reports no val_bpb; log the final "
                                          "evaluation", run.name))
        code_bytes = audit.code_bytes(run)
        total = run.artifact_bytes + (code_bytes or 0)
        if total > audit.budget:
            counted = run.code_bytes_counted_by_log
            note = f"; the log counted {counted:,} code bytes" if counted is not None and counted != code_bytes else ""
            audit.problems.append(Problem("over_budget", (
                f"{label}: {run.artifact_bytes:,} artifact + {code_bytes or 0:,} code ({audit.code_rule} rule) = "
                f"{total:,} > {audit.budget:,} by {total - audit.budget:,} bytes{note}; shrink the artifact or "
                "the code (ship a self-extracting train_gpt.py)"), run.name))


def check_time(audit: Audit) -> None:
    for run in audit.runs:
        label = f"seed {run.seed} ({run.name})"
        if run.train_time_s is not None:
            total = run.train_plus_calibration_s
            step = run.step_avg_s or (run.train_time_s / run.steps if run.steps else 0.0)
            # the loop checks the cap between steps on an unsynchronised clock, so a loop stopped
            # by the cap legitimately ends up to a step or two past it; calibration has no such excuse
            within_last_step = (run.stopped_at_cap and not run.calibration_s
                                and total - TIME_LIMIT_S <= CAP_OVERSHOOT_STEPS * step)
            if total > TIME_LIMIT_S and not within_last_step:
                calibration = f" + {run.calibration_s:g} s calibration on training data" if run.calibration_s else ""
                audit.problems.append(Problem("time_over_limit", (
                    f"{label}: training {run.train_time_s:g} s{calibration} = {total:.3f} s > {TIME_LIMIT_S:g} s"),
                    run.name))
        for evaluation in run.evaluations:
            if evaluation.eval_time_s is not None and evaluation.eval_time_s > TIME_LIMIT_S:
                audit.problems.append(Problem("time_over_limit", (
                    f"{label}: evaluation {evaluation.name} took {evaluation.eval_time_s:g} s > {TIME_LIMIT_S:g} s"),
                    run.name))
        if run.total_eval_time_s is not None and run.total_eval_time_s > TIME_LIMIT_S:
            audit.problems.append(Problem("time_over_limit", (
                f"{label}: total evaluation time {run.total_eval_time_s:g} s > {TIME_LIMIT_S:g} s"), run.name))
        for timing in run.timings:
            if timing.seconds > timing.limit:
                audit.problems.append(Problem("time_over_limit", (
                    f"{label}: {timing.name} {timing.seconds:g} s, over the log's own limit (< {timing.limit:g} s)"),
                    run.name))


def check_code(audit: Audit) -> None:
    code = audit.code
    if code.entry is None:
        audit.problems.append(Problem("entry_missing", describe(audit.folder / ENTRY_SCRIPT, "not found",
                                                                "ship the script the runs used")))
        return
    for cause in code.unreadable:
        audit.problems.append(Problem("code_unreadable", cause))
    entry_raw = code.entry_file.raw_bytes
    by_reported: dict[int, list[RunLog]] = {}
    for run in audit.runs:
        reported = run.code_bytes_reported.get("plain", run.code_bytes_reported.get("uncompressed"))
        if reported is not None:
            by_reported.setdefault(reported, []).append(run)
    helpers = ", ".join(f"{f.path} ({f.raw_bytes:,} B, {f.reason})" for f in code.helpers)
    for reported, runs in by_reported.items():
        names = ", ".join(r.name for r in runs)
        if reported == code.counted_raw_bytes:
            continue
        if reported == entry_raw and code.helpers:
            audit.problems.append(Problem("uncounted_code", (
                f"{names} {_verb(runs, 'counts', 'count')} {reported:,} code bytes, {code.entry} alone; "
                f"not counted: {helpers}; count every local file the script imports or opens")))
        else:
            shipped = f"{code.counted_raw_bytes:,} B ({code.entry} {entry_raw:,} B" + (
                f" + helpers {code.counted_raw_bytes - entry_raw:,} B)" if code.helpers else ")")
            audit.problems.append(Problem("code_mismatch", (
                f"{names} {_verb(runs, 'reports', 'report')} {reported:,} code bytes but the counted code that "
                f"ships is {shipped}; "
                "ship the code those runs used, or rerun with the shipped code")))


# ---- entry points ---------------------------------------------------------------------

def audit_submission(folder: str | Path, budget: int = DEFAULT_BUDGET, code_rule: str = "raw") -> Audit:
    """Audit one submission folder. Raises InputError for a missing folder or one without logs."""
    folder = Path(folder)
    if code_rule not in CODE_RULES:
        raise InputError(f"--code-rule {code_rule}: unknown rule; use one of {', '.join(CODE_RULES)}")
    if not folder.is_dir():
        cause = "is a file, not a folder" if folder.exists() else "no such folder"
        raise InputError(describe(folder, cause, "pass the submission folder (train_gpt.py, submission.json, "
                                              "one log per seed)"))
    runs, ignored = find_logs(folder)
    if not runs:
        raise InputError(describe(folder, "no training logs (*.log / *.txt that print a seed or a val_bpb)",
                                  "add one training log per seed, e.g. train_seed42.log"))
    log_files = [r.path for r in runs] + [folder / c for r in runs for c in r.copies] + ignored
    code = account_code(folder, code_rule, log_files)
    document, problem = read_submission_json(folder)
    problems = [problem] if problem else []
    primary = choose_primary(runs, document, problems)
    audit = Audit(folder, budget, code_rule, runs, primary, code,
                  [str(p.relative_to(folder)) for p in ignored], problems)
    check_seeds(audit)
    check_budget(audit)
    check_time(audit)
    check_code(audit)
    check_submission_json(audit, document)
    return audit


def compare(audit: Audit, baseline: Audit) -> dict:
    """Difference of the score (and of every evaluation both name alike) against a baseline
    submission, with the one-sided Welch p-values that AUDIT is lower (better). bpb is
    per byte, so it compares across tokenizers; val_loss is nats per token and compares
    only when both score the same validation tokens."""
    def row(pick_a: Callable[[RunLog], Any], pick_b: Callable[[RunLog], Any]) -> dict:
        found_a = [e for e in map(pick_a, audit.primary) if e is not None]
        found_b = [e for e in map(pick_b, baseline.primary) if e is not None]
        if not found_a or not found_b:
            return {"n": len(found_a), "n_against": len(found_b)}
        bpb_a, bpb_b = [e.val_bpb for e in found_a], [e.val_bpb for e in found_b]
        loss_a, loss_b = [e.val_loss for e in found_a], [e.val_loss for e in found_b]
        delta_bpb = mean_and_std(bpb_a)[0] - mean_and_std(bpb_b)[0]
        welch_bpb, welch_loss = welch_one_sided(bpb_a, bpb_b), welch_one_sided(loss_a, loss_b)
        return {"n": len(found_a), "n_against": len(found_b),
                "mean_bpb": mean_and_std(bpb_a)[0], "mean_bpb_against": mean_and_std(bpb_b)[0],
                "delta_bpb": delta_bpb, "delta_nats_per_byte": delta_bpb * math.log(2),
                "delta_val_loss_nats": mean_and_std(loss_a)[0] - mean_and_std(loss_b)[0],
                "p_value_bpb": welch_bpb.p_value if welch_bpb else None,
                "p_value_val_loss": welch_loss.p_value if welch_loss else None,
                "welch_bpb": welch_bpb.to_json() if welch_bpb else None}

    tokens = {r.val_tokens for r in audit.primary} | {r.val_tokens for r in baseline.primary}
    shared = [n for n in audit.evaluation_stats() if n in baseline.evaluation_stats()]
    return {"folder": str(baseline.folder), "seeds": [r.seed for r in baseline.primary],
            "headline": audit.headline_name, "headline_against": baseline.headline_name,
            "same_val_tokens": len(tokens) == 1 and None not in tokens,
            "problems_against": len(baseline.problems),
            "score": row(lambda r: r.headline, lambda r: r.headline),
            "evaluations": {name: row(lambda r, n=name: r.evaluation(n), lambda r, n=name: r.evaluation(n))
                            for name in shared}}
