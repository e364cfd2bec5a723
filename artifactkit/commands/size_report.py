"""`artifactkit size-report`: where the bytes go, what each codec and bit width would
cost, and the budget line. Parsing and printing only; the work is in
`artifactkit.report.size` and `artifactkit.report.plots`."""

from __future__ import annotations

from pathlib import Path

import click

from artifactkit.budget import count_code
from artifactkit.checkpoint import load_checkpoint
from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import (
    OUTPUT_FILE,
    budget_options,
    build_policy,
    code_paths,
    codec_option,
    debug_option,
    input_file,
    json_option,
    load_rules,
    loader_bytes_option,
    policy_options,
    progress_option,
    rules_option,
    show_progress,
)
from artifactkit.errors import InputError
from artifactkit.format.akit import MAGIC
from artifactkit.format.legacy import read_legacy
from artifactkit.format.loader_export import loader_for_artifact
from artifactkit.format.open import read_input
from artifactkit.format.reader import ArtifactReader
from artifactkit.io import atomic_write_text, refuse_overwriting_inputs
from artifactkit.plan.policy import parse_bits
from artifactkit.report.size import (
    build_report,
    parse_codec_list,
    render_markdown,
    report_tables,
    summary_line,
)
from artifactkit.roundtrip.packing import pack_checkpoint
from artifactkit.table import render


@click.command("size-report")
@input_file("path", "CHECKPOINT|ARTIFACT")
@budget_options
@loader_bytes_option
@click.option("--count-loader", is_flag=True,
              help="Count the loader 'export-loader --artifact' would write for this artifact as loader bytes.")
@policy_options
@rules_option
@codec_option
@click.option("--codecs", "codec_list", default="all", show_default=True, metavar="all|none|CODEC,...",
              help="Codecs to compare (each encodes and decodes the whole artifact): lzma, zstd, zlib, brotli, "
                   "ans, raw.")
@click.option("--what-if/--no-what-if", "with_what_if", default=True, show_default=True,
              help="Re-quantize attn, mlp and embed at int5..int8 and measure each (the slowest part on a "
                   "large model; checkpoints only).")
@click.option("--plot", "plot_path", type=OUTPUT_FILE, default=None,
              help="Write a PNG: bytes by category against the budget, bytes per layer, code histograms.")
@click.option("--markdown", "markdown_path", type=OUTPUT_FILE, default=None,
              help="Write the report as markdown (linking the --plot PNG when given).")
@progress_option
@json_option
@debug_option
@guarded
def size_report_command(path: str, code_files: tuple[str, ...], budget: int, code_rule: str, loader_bytes: int,
                        count_loader: bool, policy_name: str, bits: str | None, bits_for: tuple[str, ...],
                        clip: str | None, rules_path: str | None, codec: str, codec_list: str, with_what_if: bool,
                        plot_path: str | None, markdown_path: str | None, progress: bool | None,
                        as_json: bool) -> None:
    """Where the bytes of an .akit ARTIFACT, or of a CHECKPOINT packed in memory exactly
    as 'pack' writes it with the same --policy/--bits/--codec/--rules, go (only a
    checkpoint gets the what-if table, which needs the float weights; --codec is
    ignored for an artifact). Progress lines name each measuring step.

    Shows, measured by compressing (not estimated): bytes per category and per tensor
    with raw bytes and the empirical entropy of the int codes; every codec's size and
    compress/decompress time on the same model; the total with attn, mlp or embed at
    int5..int8 against the budget; and the budget line (model + code + loader, headroom,
    code-byte rule). Categories add up to the artifact's bytes exactly: each section's
    bytes are split by what each category's part compresses to alone, and the header is
    the 'overhead' category. Files beside the first --code file that are not counted are
    listed as notices."""
    refuse_overwriting_inputs({"--plot": plot_path, "--markdown": markdown_path},
                              [path, rules_path, *code_files])
    compare = parse_codec_list(codec_list)
    progress_note = (lambda text: note(f"size-report: {text}")) if show_progress(progress) else None
    data = read_input(path)
    model = float_state = None
    if data[:4] == MAGIC[:4]:
        reader = ArtifactReader(data, path)
        source_kind = "artifact"
    elif read_legacy(data, path) is not None:
        raise InputError(f"{path}: is a legacy .ptz artifact; size-report measures .akit sections, so pass the "
                         "checkpoint it came from (or 'artifactkit unpack' it and pass that state dict)")
    else:
        loaded = load_checkpoint(path)
        for message in loaded.notices:
            note(message)
        policy = build_policy(policy_name, bits, bits_for, clip)
        packed_checkpoint = pack_checkpoint(loaded, policy, codec, load_rules(rules_path), parse_bits(bits))
        for message in packed_checkpoint.notices:
            note(message)
        model = packed_checkpoint.packed.model
        guard = model.classification.guard_message()
        if guard:
            note(f"warning: {path}: {guard}")
        reader = ArtifactReader(packed_checkpoint.packed.data, path)
        float_state = loaded.state_dict if with_what_if else None
        source_kind = f"checkpoint packed in memory as 'pack' writes it, policy {model.policy.name}, codec {codec}"
    hint = loader_for_artifact(reader.header).size_bytes
    if count_loader:
        if loader_bytes:
            raise InputError("--count-loader and --loader-bytes: pass one of them")
        loader_bytes = hint
    paths = code_paths(code_files)
    code = count_code(paths)
    report = build_report(reader, path, source_kind, code, code_rule, budget, loader_bytes, hint, compare,
                          model=model, float_state=float_state, code_paths=paths, progress=progress_note)
    if plot_path:
        from artifactkit.report.plots import size_report_figure

        size_report_figure(report, plot_path)
    if markdown_path:
        plot_name = None
        if plot_path:
            plot_name = str(Path(plot_path).resolve().relative_to(Path(markdown_path).resolve().parent)) \
                if Path(plot_path).resolve().is_relative_to(Path(markdown_path).resolve().parent) \
                else str(Path(plot_path).resolve())
        atomic_write_text(markdown_path, render_markdown(report, plot_name))
    for message in report.notices:
        note(message)
    if as_json:
        emit_json(report.to_json())
        return
    click.echo(summary_line(report))
    for title, headers, rows in report_tables(report):
        click.echo(f"\n{title}")
        click.echo(render(headers, rows))
    for written in filter(None, (plot_path, markdown_path)):
        note(f"wrote {written}")


COMMANDS = [size_report_command]
