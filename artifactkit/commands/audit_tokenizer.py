"""`artifactkit audit-tokenizer`: what a SentencePiece model means for val_bpb. Parsing
and printing only; the work is in `eval.tokenizer_audit`."""

from __future__ import annotations

from pathlib import Path

import click

from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import EXISTING_FILE, POSITIVE_INT, debug_option, input_file, json_option
from artifactkit.errors import CheckFailed, InputError
from artifactkit.roundtrip.evaluate import load_val_tokens
from eval.bpb import build_byte_tables
from eval.runtime import load_tokenizer
from eval.tokenizer_audit import (
    DEFAULT_CHECK_TOKENS,
    ByteCheck,
    check_byte_table,
    split_documents,
    summarize_val,
    summarize_vocab,
    text_documents,
)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); pass a UTF-8 text file") from exc


def _check_line(check: ByteCheck) -> str:
    verdict = "OK" if check.passed else "MISMATCH"
    line = (
        f"byte check  {check.source}: {check.documents:,} documents ({check.checked_documents:,} checked, "
        f"{check.documents_with_unknown:,} with unknown ids skipped): table {check.table_bytes:,} bytes vs "
        f"decoded UTF-8 {check.decoded_bytes:,} bytes  {verdict}"
    )
    if check.first_mismatch:
        line += f"\n            {check.mismatched_documents:,} documents differ; first: {check.first_mismatch}"
    return line


@click.command("audit-tokenizer")
@input_file("model", "TOKENIZER")
@click.option("--val", "val", help="Validation shards (path or glob): unknown-target fraction and a byte check "
              "on their decoded documents.")
@click.option("--text", "text_path", type=EXISTING_FILE,
              help="A UTF-8 text file: its paragraphs are encoded and the byte table checked against them.")
@click.option("--check-tokens", type=POSITIVE_INT, default=DEFAULT_CHECK_TOKENS, show_default=True,
              help="Decode at most this many validation tokens for the byte check.")
@json_option
@debug_option
@guarded
def audit_tokenizer_command(model: str, val: str | None, text_path: str | None, check_tokens: int,
                            as_json: bool) -> None:
    """Audit the SentencePiece TOKENIZER (.model) for val_bpb: vocab size; byte-fallback, control and
    unknown pieces; whether a standalone space piece exists; the fraction of validation
    targets that are unknown (0 bytes under the official rule); and whether the byte
    table reproduces the true UTF-8 byte count of decoded real text.

    Exit 1 when the byte table disagrees with the decoded text.
    """
    sp, sha256 = load_tokenizer(model)
    tables = build_byte_tables(sp)
    vocab = summarize_vocab(sp, tables)
    val_summary = None
    checks: list[ByteCheck] = []
    if val:
        tokens = load_val_tokens(val)
        val_summary = summarize_val(tables, tokens)
        checks.append(check_byte_table(sp, tables, split_documents(tokens, check_tokens), f"val {val}"))
    if text_path:
        checks.append(check_byte_table(sp, tables, text_documents(sp, _read_text(text_path)), f"text {text_path}"))

    if not vocab.has_standalone_space:
        note("warning: no standalone '\u2581' piece: a lone space is written as byte-fallback bytes of '\u2581' "
             "and the official rule counts it as 3 bytes")
    if val_summary and val_summary.unknown_targets:
        note(f"warning: {val_summary.unknown_targets:,} validation targets ({val_summary.unknown_fraction:.3%}) are "
             "unknown ids; they count 0 bytes under the official rule, so val_bpb omits those characters")
    if val_summary and val_summary.out_of_vocab_targets:
        note(f"warning: {val_summary.out_of_vocab_targets:,} validation ids are outside the tokenizer's vocabulary; "
             "the shards were made with another tokenizer")
    passed = all(check.passed for check in checks)
    if as_json:
        emit_json({
            "tokenizer": str(model),
            "sha256": sha256,
            "vocab": vocab.__dict__,
            "val": val_summary.__dict__ if val_summary else None,
            "byte_checks": [check.to_dict() for check in checks],
            "passed": passed,
        })
    else:
        space = f"yes (id {vocab.standalone_space_id})" if vocab.has_standalone_space else "NO"
        lines = [
            f"tokenizer   {model} (sha256 {sha256[:16]}...)",
            f"vocab       {vocab.vocab_size:,} pieces: {vocab.byte_fallback_pieces:,} byte-fallback, "
            f"{vocab.control_pieces:,} control, {vocab.unknown_pieces:,} unknown, {vocab.unused_pieces:,} unused, "
            f"{vocab.leading_space_pieces:,} with a leading space; standalone space piece: {space}",
        ]
        if val_summary:
            lines.append(
                f"val         {val}: {val_summary.tokens:,} tokens, {val_summary.documents:,} documents, "
                f"{val_summary.bytes:,} bytes; unknown targets {val_summary.unknown_targets:,} "
                f"({val_summary.unknown_fraction:.4%}), byte-fallback targets {val_summary.byte_fallback_targets:,}"
            )
        lines += [_check_line(check) for check in checks]
        if not checks:
            lines.append("byte check  skipped: pass --text FILE or --val GLOB")
        click.echo("\n".join(lines))
    failed = [check for check in checks if not check.passed]
    if failed:
        raise CheckFailed(
            f"{model}: the byte table disagrees with the decoded text in {failed[0].source} "
            f"({failed[0].mismatched_documents:,} documents); val_bpb under the official rule will not be "
            "bits per true UTF-8 byte with this tokenizer"
        )


COMMANDS = [audit_tokenizer_command]
