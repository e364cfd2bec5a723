"""File input and output for artifactkit: `eval.atomic` (temp file + rename) with the
failure turned into an InputError that names the path, so a crash or a full disk never
leaves a half-written artifact or report behind; the guard that refuses an output path
that is one of the command's own inputs (a rename over the input would destroy it); and
bounded reads: no input file is read past a stated size limit, so a device such as
/dev/zero, a pipe or a huge file is a one-line error instead of an endless read."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from artifactkit.errors import InputError
from eval import atomic

# The most any reader takes from one file, by kind (the caps on what happens after
# reading, such as decompression, live in `artifactkit.format.limits`). Each is far above
# what a model under the 16,000,000-byte budget needs, and each is named in its error.
MAX_ARTIFACT_FILE_BYTES = 1 << 28  # 256 MiB: 16x the budget; over-budget packs seen are <= 55 MB
MAX_CHECKPOINT_FILE_BYTES = 1 << 32  # 4 GiB: 1G float32 parameters, 30x what a 16 MB artifact holds
MAX_TEXT_FILE_BYTES = 1 << 24  # 16 MiB: rules TOML, JSON documents (real ones are a few KB)


def read_bounded(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of `path`, never more than `limit`: a regular file larger than that is
    refused before reading; anything else (a pipe, a device) is read up to `limit` + 1
    bytes and then refused. `what` names the kind of file in the errors."""
    path = Path(path)
    too_big = (f"{path}: is larger than the {limit:,}-byte limit for {what} (a device, a stream or the wrong "
               "file?); pass the file itself")
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise InputError(too_big)
            data = handle.read(limit + 1)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file; check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory; pass {what} file") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read (permission denied); check its permissions") from exc
    except OSError as exc:
        raise InputError(f"{path}: could not be read ({exc.strerror or exc}); check the path") from exc
    if len(data) > limit:
        raise InputError(too_big)
    return data


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
