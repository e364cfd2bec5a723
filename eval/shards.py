"""FineWeb token shards: 256 little-endian int32 header words ([0] magic 20240520,
[1] version 1, [2] token count), then the tokens as little-endian uint16.

Readers validate everything and name the file in every error; writers are atomic.
"""

from __future__ import annotations

import glob as globlib
import os
from pathlib import Path

import numpy as np

from eval.atomic import atomic_write_bytes

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
BOS_ID = 1


class ShardError(ValueError):
    """A shard file is malformed. The message names the file, the cause and the fix."""


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> Path:
    """Write `tokens` (ids < 65536) as one shard, atomically (temp file + rename)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path}: tokens must be 1-D, got shape {tokens.shape}; flatten them first")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 2**16):
        raise ShardError(f"{path}: token ids must lie in [0, 65535]; use a vocabulary below 65536 tokens")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    payload = header.tobytes() + tokens.astype("<u2").tobytes()
    return atomic_write_bytes(path, payload)


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header against its file size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror}); check the path") from exc
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: file is {size:,} bytes, shorter than the {HEADER_BYTES:,}-byte shard header; "
            "the file is truncated or not a token shard"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(
            f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a FineWeb token shard"
        )
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(
            f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION}); "
            "re-export the shard with version 1"
        )
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardError(
            f"{path}: header says {count:,} tokens ({expected:,} bytes) but the file has {size:,} bytes; "
            "the shard is truncated or corrupt, re-create it"
        )
    return count


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map one shard's tokens (read-only uint16 array) after validating it."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def resolve_shards(pattern: str | os.PathLike) -> list[Path]:
    """Expand a glob (or a single path) to shard paths, sorted as strings."""
    pattern = str(pattern)
    # Sorted as strings, like the official loader (`sorted(glob.glob(pattern))`): Path
    # objects compare part by part, which orders sibling folders such as `a/` and `a-b/`
    # differently and would feed the shards in another order.
    paths = [Path(p) for p in sorted(globlib.glob(pattern))]
    if not paths:
        raise ShardError(f"{pattern}: no shard files match; check the path or glob pattern")
    return paths


def load_tokens(pattern: str | os.PathLike) -> np.ndarray:
    """All tokens of the shards matching `pattern`, concatenated in `resolve_shards` order."""
    arrays = [read_shard(p) for p in resolve_shards(pattern)]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays)
