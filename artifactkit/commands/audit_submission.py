"""`artifactkit audit DIR`: check a submission folder the way the challenge organizers
do. Parsing and printing only; the work is in `artifactkit.report.submission_audit`."""

from __future__ import annotations

import click

from artifactkit.budget import RULE_TEXT
from artifactkit.commands._framework import emit_json, guarded
from artifactkit.commands._options import budget_option, code_rule_option, debug_option, json_option
from artifactkit.report.submission_audit import Audit, audit_submission, compare

EXIT_CHECK_FAILED = 1


def _cell(value: object, digits: int = 8) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(headers: list[str], rows: list[list[object]]) -> list[str]:
    cells = [headers] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def numeric(text: str) -> bool:
        return text.replace(",", "").replace(".", "").replace("-", "").replace("e", "").replace("+", "").isdigit()

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(row) for row in cells[1:]]


def _seed_rows(audit: Audit) -> list[list[object]]:
    rows = []
    for run in audit.runs:
        document = audit.run_json(run)
        headline = run.headline
        rows.append([None if run.seed is None else str(run.seed), run.name + ("" if run in audit.primary else " (extra)"), run.steps,
                     run.train_plus_calibration_s, run.val_tokens, run.train_shards,
                     headline.val_bpb if headline else None, run.artifact_bytes, document["code_bytes"],
                     document["recomputed_total_bytes"], document["headroom"]])
    return rows


def render_text(audit: Audit, against: dict | None) -> str:
    lines = [f"audit {audit.folder}  (budget {audit.budget:,} bytes; code rule {RULE_TEXT[audit.code_rule]})", ""]
    lines += _table(["seed", "log", "steps", "train+calib s", "val tokens", "shards", f"{audit.headline_name or 'score'} bpb",
                     "artifact B", "code B", "total B", "headroom B"], _seed_rows(audit))
    stats = audit.evaluation_stats()
    lines += ["", "evaluations over the seeds (sample std; * the score)"]
    lines += _table(["evaluation", "n", "mean bpb", "std bpb", "mean loss", "std loss"], [
        [name + (" *" if name == audit.headline_name else ""), s["n"], s["mean_bpb"], s["std_bpb"], s["mean_loss"],
         s["std_loss"]] for name, s in stats.items()])
    code = audit.code
    lines += ["", f"code counted under the {audit.code_rule} rule: {code.counted_bytes:,} bytes"]
    for f in code.counted:
        wrapper = (f"; self-extracting: {f.wrapper.decoded_bytes:,} B of source ({f.wrapper.chain})"
                   if f.wrapper else "")
        lines.append(f"  counted      {f.path}  {f.counted_bytes:,} B  ({f.reason}{wrapper})")
    for f in code.not_counted:
        imports = f"; imports {', '.join(f.imports)}" if f.imports else ""
        lines.append(f"  not counted  {f.path}  {f.bytes:,} B  ({f.kind}: {f.reason}{imports})")
    if against:
        score = against["score"]
        lines += ["", f"against {against['folder']} (seeds {', '.join(map(str, against['seeds']))}): "
                      f"{audit.headline_name} vs {against['headline_against']}"]
        columns = ("delta_bpb", "delta_nats_per_byte", "delta_val_loss_nats", "p_value_bpb", "p_value_val_loss")
        rows = [["score"] + [score.get(c) for c in columns]]
        rows += [[name] + [row.get(c) for c in columns] for name, row in against["evaluations"].items()]
        lines += _table(["evaluation", "delta bpb", "delta nats/byte", "delta val_loss (nats/token)", "p (bpb)",
                         "p (val_loss)"], rows)
        lines.append("  p: one-sided Welch t-test that this folder's mean is lower (better); '-' below 2 seeds a side")
        if not against["same_val_tokens"]:
            lines.append("  the folders score different validation tokens (another tokenizer or split): compare bpb; "
                         "val_loss in nats per token does not compare")
    summary = audit.summary()["submission_json"]
    lines += ["", f"submission.json: {len(summary['checked'])} values checked against the logs, "
                  f"{len(summary['unchecked'])} not checkable"]
    for key, log in summary["one_seed_not_mean"].items():
        lines.append(f"  {key} is the value of one run ({log}), not the mean over the seeds")
    if audit.problems:
        lines += ["", f"problems ({len(audit.problems)}):"]
        for problem in audit.problems:
            lines.append(f"  {problem.kind}: {problem.message}")
        lines += ["", "problem kinds:"] + [f"  {kind}: {explanation}" for kind, explanation in
                                           _kinds(audit).items()]
    lines += ["", "OK" if audit.ok else f"FAILED ({len(audit.problems)} problems)"]
    return "\n".join(lines)


def _kinds(audit: Audit) -> dict[str, str]:
    return {p.kind: p.to_json()["explanation"] for p in audit.problems}


@click.command("audit")
@click.argument("folder", metavar="DIR")
@click.option("--against", "against_folder", metavar="DIR2", default=None,
              help="Another submission folder to compare with: difference in bpb and nats and the one-sided Welch "
                   "t-test p-value that DIR is better.")
@budget_option
@code_rule_option
@json_option
@debug_option
@guarded
def audit_command(folder: str, against_folder: str | None, budget: int, code_rule: str, as_json: bool) -> None:
    """Check the submission folder DIR (README.md, submission.json, train_gpt.py, one log
    per seed) the way the challenge organizers do: parse every seed's log; recompute the
    code bytes (train_gpt.py, the local modules it imports, also inside a self-extracting
    wrapper, and files it opens by a literal path); flag seeds over the budget, fewer than
    3 seeds, settings / validation tokens / train shards that differ between seeds,
    submission.json values the logs do not support, training or evaluation over 600 s,
    and local code that is not counted. Prints mean and std per evaluation; with --against,
    the difference and the Welch p-value.

    Exit 0 no problem, 1 any problem, 2 bad input (missing folder, no logs).
    """
    audit = audit_submission(folder, budget, code_rule)
    against = compare(audit, audit_submission(against_folder, budget, code_rule)) if against_folder else None
    if as_json:
        emit_json(audit.to_json(against))
    else:
        click.echo(render_text(audit, against))
    if not audit.ok:
        raise SystemExit(EXIT_CHECK_FAILED)


COMMANDS = [audit_command]
