"""Tokenizer byte tables and the val_bpb formula, exactly the challenge's rule.

Per SentencePiece id:

* control / unknown / unused ids count 0 bytes and are *boundaries*;
* byte-fallback ids (`<0x41>`) count 1 byte;
* every other piece counts the UTF-8 length of the piece without its leading `▁`,
  plus 1 byte when it had a `▁` and the *previous* token is not a boundary.

`val_bpb = (Σ nll / ln 2) / Σ bytes` with float64 sums over all scored targets; the
ratio of sums, never a mean of per-window ratios.

Ids at or above the tokenizer's vocabulary (a model vocabulary padded past the
tokenizer's) are treated like control ids: 0 bytes, boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sentencepiece
import torch

SPACE_MARK = "\u2581"  # "▁", SentencePiece's whitespace symbol


@dataclass(frozen=True)
class ByteTables:
    """Lookup tables indexed by token id (length = table size >= tokenizer vocab).

    `base_bytes`: bytes a token always contributes; `has_leading_space`: the piece
    starts with `▁` (one more byte unless the previous token is a boundary);
    `is_boundary`: control / unknown / unused / padding id. The counters are kept for
    the tokenizer audit.
    """

    base_bytes: np.ndarray  # int16 [table_size]
    has_leading_space: np.ndarray  # bool [table_size]
    is_boundary: np.ndarray  # bool [table_size]
    is_byte_fallback: np.ndarray  # bool [table_size]
    is_unknown: np.ndarray  # bool [table_size]
    is_control: np.ndarray  # bool [table_size]
    tokenizer_vocab_size: int

    @property
    def table_size(self) -> int:
        return int(self.base_bytes.shape[0])

    def to_torch(self, device: str | torch.device = "cpu") -> TorchByteTables:
        """The three tables the counter needs, as tensors on `device`."""
        return TorchByteTables(
            base_bytes=torch.as_tensor(self.base_bytes.astype(np.int32), device=device),
            has_leading_space=torch.as_tensor(self.has_leading_space, device=device),
            is_boundary=torch.as_tensor(self.is_boundary, device=device),
        )


@dataclass(frozen=True)
class TorchByteTables:
    """`ByteTables` moved to a device, for counting bytes next to the logits."""

    base_bytes: torch.Tensor
    has_leading_space: torch.Tensor
    is_boundary: torch.Tensor

    @property
    def table_size(self) -> int:
        return int(self.base_bytes.shape[0])


def build_byte_tables(sp: sentencepiece.SentencePieceProcessor, vocab_size: int | None = None) -> ByteTables:
    """Build the per-id tables for `sp`. `vocab_size` (a model's, possibly padded past the
    tokenizer's) extends the tables with boundary ids that count 0 bytes."""
    tokenizer_vocab = int(sp.get_piece_size())
    table_size = max(tokenizer_vocab, int(vocab_size or 0))
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    is_byte_fallback = np.zeros(table_size, dtype=np.bool_)
    is_unknown = np.zeros(table_size, dtype=np.bool_)
    is_control = np.zeros(table_size, dtype=np.bool_)
    for token_id in range(tokenizer_vocab):
        is_unknown[token_id] = sp.is_unknown(token_id)
        is_control[token_id] = sp.is_control(token_id)
        if is_unknown[token_id] or is_control[token_id] or sp.is_unused(token_id):
            continue  # 0 bytes, boundary
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            is_byte_fallback[token_id] = True
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith(SPACE_MARK):
            has_leading_space[token_id] = True
            piece = piece[len(SPACE_MARK) :]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return ByteTables(
        base_bytes=base_bytes,
        has_leading_space=has_leading_space,
        is_boundary=is_boundary,
        is_byte_fallback=is_byte_fallback,
        is_unknown=is_unknown,
        is_control=is_control,
        tokenizer_vocab_size=tokenizer_vocab,
    )


def count_bytes(
    tables: ByteTables | TorchByteTables,
    prev_ids: np.ndarray | torch.Tensor,
    target_ids: np.ndarray | torch.Tensor,
) -> np.ndarray | torch.Tensor:
    """Bytes each target token stands for, given the token before it (same shapes).

    numpy ids -> int64 numpy array; tensor ids -> int64 tensor on the ids' device
    (pass `tables.to_torch(device)` for tensors, or a `ByteTables` to convert here).
    """
    if isinstance(target_ids, torch.Tensor):
        if isinstance(tables, ByteTables):
            tables = tables.to_torch(target_ids.device)
        prev = torch.as_tensor(prev_ids, device=target_ids.device).long()
        target = target_ids.long()
        extra = tables.has_leading_space[target] & ~tables.is_boundary[prev]
        return tables.base_bytes[target].long() + extra.long()
    if not isinstance(tables, ByteTables):
        raise TypeError("count_bytes: numpy ids need numpy ByteTables; pass the ByteTables, not .to_torch()")
    prev = np.asarray(prev_ids, dtype=np.int64)
    target = np.asarray(target_ids, dtype=np.int64)
    extra = tables.has_leading_space[target] & ~tables.is_boundary[prev]
    return tables.base_bytes[target].astype(np.int64) + extra.astype(np.int64)


def bits_per_byte(nll_sum: float, byte_count: int) -> float:
    """`(Σ nll / ln 2) / Σ bytes` in float64; `nll_sum` is in nats."""
    if byte_count <= 0:
        raise ValueError(f"bits_per_byte: byte count is {byte_count}; nothing scored counts any bytes")
    return float(np.float64(nll_sum) / np.float64(math.log(2.0)) / np.float64(byte_count))


def stream_byte_count(tables: ByteTables, tokens: np.ndarray) -> int:
    """Total bytes of every target in a token stream (targets tokens[1:], each with its
    predecessor): what a full evaluation of `tokens` divides by."""
    tokens = np.asarray(tokens)
    if tokens.size < 2:
        return 0
    return int(count_bytes(tables, tokens[:-1], tokens[1:]).sum())
