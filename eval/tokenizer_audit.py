"""Tokenizer audit: what a SentencePiece model's vocabulary means for val_bpb.

Three independent parts:

* `summarize_vocab`: vocab size; byte-fallback, control, unknown and unused pieces;
  whether a standalone `▁` exists (without one, a space can only be written as the
  three byte-fallback bytes of `▁`, which the official rule counts as 3 bytes).
* `summarize_val`: over validation tokens, the fraction of targets that are unknown
  (they count 0 bytes under the official rule, flattering val_bpb).
* `check_byte_table`: on real documents, the byte table's count against the UTF-8
  length of the decoded text. Documents containing unknown ids are counted apart
  (their decoded text shows a placeholder, not the original characters).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import sentencepiece

from eval.bpb import SPACE_MARK, ByteTables, stream_byte_count
from eval.evaluate import EvalError

BOS_ID = 1
DEFAULT_CHECK_TOKENS = 2_000_000


@dataclass(frozen=True)
class VocabSummary:
    vocab_size: int
    byte_fallback_pieces: int
    control_pieces: int
    unknown_pieces: int
    unused_pieces: int
    leading_space_pieces: int
    has_standalone_space: bool
    standalone_space_id: int | None


@dataclass(frozen=True)
class ValSummary:
    tokens: int
    targets: int
    documents: int  # BOS ids in the stream
    unknown_targets: int
    unknown_fraction: float
    byte_fallback_targets: int
    out_of_vocab_targets: int
    bytes: int  # official byte count of all targets


@dataclass(frozen=True)
class ByteCheck:
    source: str
    documents: int
    checked_documents: int  # documents without unknown ids
    documents_with_unknown: int
    tokens: int
    table_bytes: int  # over checked documents
    decoded_bytes: int  # UTF-8 bytes of their decoded text
    mismatched_documents: int
    first_mismatch: str | None

    @property
    def passed(self) -> bool:
        return self.checked_documents > 0 and self.mismatched_documents == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def summarize_vocab(sp: sentencepiece.SentencePieceProcessor, tables: ByteTables) -> VocabSummary:
    vocab = int(sp.get_piece_size())
    space_id = sp.piece_to_id(SPACE_MARK)
    # piece_to_id returns the unknown id for a missing piece.
    standalone = sp.id_to_piece(space_id) == SPACE_MARK and not sp.is_unknown(space_id)
    return VocabSummary(
        vocab_size=vocab,
        byte_fallback_pieces=int(tables.is_byte_fallback[:vocab].sum()),
        control_pieces=int(tables.is_control[:vocab].sum()),
        unknown_pieces=int(tables.is_unknown[:vocab].sum()),
        unused_pieces=sum(1 for token in range(vocab) if sp.is_unused(token)),
        leading_space_pieces=int(tables.has_leading_space[:vocab].sum()),
        has_standalone_space=bool(standalone),
        standalone_space_id=int(space_id) if standalone else None,
    )


def summarize_val(tables: ByteTables, tokens: np.ndarray) -> ValSummary:
    tokens = np.asarray(tokens)
    targets = tokens[1:].astype(np.int64)
    in_range = targets < tables.table_size
    known = targets[in_range]
    unknown = int(tables.is_unknown[known].sum())
    total_bytes = stream_byte_count(tables, tokens) if in_range.all() and tokens.size >= 2 else 0
    return ValSummary(
        tokens=int(tokens.size),
        targets=int(targets.size),
        documents=int((tokens == BOS_ID).sum()),
        unknown_targets=unknown,
        unknown_fraction=unknown / targets.size if targets.size else 0.0,
        byte_fallback_targets=int(tables.is_byte_fallback[known].sum()),
        out_of_vocab_targets=int((~in_range).sum()),
        bytes=total_bytes,
    )


def split_documents(tokens: np.ndarray, limit: int = DEFAULT_CHECK_TOKENS) -> list[list[int]]:
    """Documents of a BOS-delimited stream (BOS removed), from the first `limit` tokens;
    a document cut by the limit is left out."""
    tokens = np.asarray(tokens[: limit + 1]).astype(np.int64)
    starts = np.flatnonzero(tokens == BOS_ID)
    documents = []
    for begin, end in zip(starts, list(starts[1:]) + [None], strict=True):
        if end is None and tokens.size > limit:
            break
        document = tokens[begin + 1 : end].tolist()
        if document:
            documents.append(document)
    return documents


def text_documents(sp: sentencepiece.SentencePieceProcessor, text: str) -> list[list[int]]:
    """Paragraphs (blank-line separated) encoded one by one, as shards hold documents."""
    paragraphs = [paragraph for paragraph in text.split("\n\n") if paragraph.strip()]
    return [ids for ids in sp.encode(paragraphs) if ids]


def check_byte_table(
    sp: sentencepiece.SentencePieceProcessor,
    tables: ByteTables,
    documents: Sequence[list[int]] | Iterable[list[int]],
    source: str,
) -> ByteCheck:
    """Table bytes of each document (after a BOS) against the UTF-8 length of its decoded
    text; the first mismatch is described. Ids outside the vocabulary cannot be decoded
    at all: an EvalError naming the largest one (the tokens came from another tokenizer)."""
    documents = list(documents)
    vocab = int(sp.get_piece_size())
    outside = [token for ids in documents for token in ids if not 0 <= token < vocab]
    if outside:
        raise EvalError(f"{source}: {len(outside):,} token ids lie outside the tokenizer's {vocab:,} pieces (largest "
                        f"{max(outside, key=abs):,}), so they were made with another tokenizer; pass the tokenizer "
                        "that made these tokens")
    unknown_id = sp.unk_id()
    clean = [ids for ids in documents if unknown_id not in ids]
    decoded = sp.decode(clean) if clean else []
    table_total = decoded_total = mismatched = 0
    first_mismatch = None
    for ids, text in zip(clean, decoded, strict=True):
        table = stream_byte_count(tables, np.asarray([BOS_ID, *ids]))
        truth = len(text.encode("utf-8"))
        table_total += table
        decoded_total += truth
        if table != truth:
            mismatched += 1
            if first_mismatch is None:
                pieces = [sp.id_to_piece(token) for token in ids[:12]]
                first_mismatch = f"table {table} vs decoded {truth} bytes for {text[:40]!r} (pieces {pieces})"
    return ByteCheck(
        source=source,
        documents=len(documents),
        checked_documents=len(clean),
        documents_with_unknown=len(documents) - len(clean),
        tokens=sum(len(ids) for ids in documents),
        table_bytes=table_total,
        decoded_bytes=decoded_total,
        mismatched_documents=mismatched,
        first_mismatch=first_mismatch,
    )
