"""Atomic file output: write to a temp file in the same folder, then rename, so a
crash or a full disk never leaves a half-written artifact or report behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from artifactkit.errors import InputError


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass a file name for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{path}: cannot create the output ({exc.strerror}); check the folder and permissions") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"{path}: could not write the output ({exc.strerror}); nothing was changed") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
