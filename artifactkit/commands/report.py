"""`artifactkit report ...`: generated reports (markdown + PNG) for `reports/`."""

from __future__ import annotations

import click

from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import EXISTING_FILE, debug_option, input_file, json_option, output_option
from artifactkit.io import refuse_overwriting_inputs
from artifactkit.report.ab import (
    ab_report_paths,
    ab_rows,
    read_log,
    summarize,
    token_sets_text,
    write_ab_report,
)
from artifactkit.table import render


@click.group("report")
def report_group() -> None:
    """Generated reports (markdown + PNG), e.g. the A/B comparison of two training runs
    ('report ab'), written where you say, typically under reports/."""


@report_group.command("ab")
@input_file("log_a", "LOG_A")
@input_file("log_b", "LOG_B")
@click.option("--label-a", default="A", show_default=True, help="Name of run A in the table and plot.")
@click.option("--label-b", default="B", show_default=True, help="Name of run B in the table and plot.")
@click.option("--artifact-a", type=EXISTING_FILE, default=None, help="Run A's packed artifact (its bytes are shown).")
@click.option("--artifact-b", type=EXISTING_FILE, default=None, help="Run B's packed artifact.")
@click.option("--roundtrip-a", type=EXISTING_FILE, default=None,
              help="Run A's 'roundtrip-eval --json' output (val_bpb after quantization).")
@click.option("--roundtrip-b", type=EXISTING_FILE, default=None, help="Run B's 'roundtrip-eval --json' output.")
@click.option("--title", default=None, help="Report title. Default: 'A/B: LABEL_A vs LABEL_B'.")
@output_option("NAME.md and NAME.png (NAME is a base name)", metavar="reports/NAME")
@json_option
@debug_option
@guarded
def ab_command(log_a: str, log_b: str, label_a: str, label_b: str, artifact_a: str | None, artifact_b: str | None,
               roundtrip_a: str | None, roundtrip_b: str | None, title: str | None, output: str,
               as_json: bool) -> None:
    """Compare two training runs from their JSON-lines logs (RUN_DIR/log.jsonl of
    'python -m train'): steps, wall clock, median step time, val_bpb live, val_bpb after
    roundtrip (with --roundtrip-*), artifact bytes (with --artifact-*), and a plot of
    training loss (smoothed, raw values faint) and val_bpb against wall clock. Says which
    tokens each val_bpb row was measured on (the trainer's from RUN_DIR/run.json) and
    which rows compare. Writes NAME.md and NAME.png."""
    markdown_out, png_out = ab_report_paths(output)
    refuse_overwriting_inputs({"-o (NAME.md)": markdown_out, "-o (NAME.png)": png_out},
                              [log_a, log_b, artifact_a, artifact_b, roundtrip_a, roundtrip_b])
    logs = read_log(log_a, label_a), read_log(log_b, label_b)
    summaries = summarize(logs[0], artifact_a, roundtrip_a), summarize(logs[1], artifact_b, roundtrip_b)
    markdown_path, png_path = write_ab_report(*logs, *summaries, output, title)
    if as_json:
        emit_json({"markdown": str(markdown_path), "plot": str(png_path),
                   "a": summaries[0].to_json(), "b": summaries[1].to_json()})
        return
    click.echo(render(["", label_a, label_b, "B - A"], ab_rows(*summaries)))
    click.echo("\n" + token_sets_text(*summaries))
    note(f"wrote {markdown_path} and {png_path}")


COMMANDS = [report_group]
