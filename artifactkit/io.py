"""Atomic file output for artifactkit: `eval.atomic` (temp file + rename) with the
failure turned into an InputError that names the path, so a crash or a full disk never
leaves a half-written artifact or report behind."""

from __future__ import annotations

import os
from pathlib import Path

from artifactkit.errors import InputError
from eval import atomic


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass a file name for the output")
    try:
        return atomic.atomic_write_bytes(path, data)
    except OSError as exc:
        raise InputError(f"{path}: could not write the output ({exc.strerror}); nothing was changed") from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
