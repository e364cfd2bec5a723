"""Atomic file output for artifactkit: `eval.atomic` (temp file + rename) with the
failure turned into an InputError that names the path, so a crash or a full disk never
leaves a half-written artifact or report behind; and the guard that refuses an output
path that is one of the command's own inputs (a rename over the input would destroy it)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from artifactkit.errors import InputError
from eval import atomic


def _same_file(output: Path, source: Path) -> bool:
    """True when writing `output` would replace `source`: the same path, a symlink to it,
    or a hard link of it (same device and inode)."""
    try:
        return output.exists() and source.exists() and os.path.samefile(output, source)
    except OSError:
        return False


def refuse_overwriting_inputs(outputs: Mapping[str, str | os.PathLike | None],
                              inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise InputError before any work when an output (option name -> path) resolves to
    one of `inputs` or to another output. Nothing is read or written here."""
    given = {option: Path(path) for option, path in outputs.items() if path is not None}
    sources = [Path(path) for path in inputs if path is not None]
    for option, output in given.items():
        for source in sources:
            if _same_file(output, source) or output.resolve() == source.resolve():
                raise InputError(f"{output}: {option} is the input file {source} (same file, link or path); "
                                 "writing it would destroy the input, so nothing was done; choose another output path")
    seen: dict[Path, str] = {}
    for option, output in given.items():
        key = output.resolve()
        if key in seen:
            raise InputError(f"{output}: {option} and {seen[key]} name the same file; give each output its own path")
        seen[key] = option


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
