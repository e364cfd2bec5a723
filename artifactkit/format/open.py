"""Open any quantized artifact by content: `.akit` first, then the legacy formats.
The file is read bounded (`artifactkit.io.MAX_ARTIFACT_FILE_BYTES`) and fully validated
(every section decoded), so whoever opens it -- inspect, check, unpack -- sees the same
verdict: a file that opens here loads."""

from __future__ import annotations

from pathlib import Path

from artifactkit.errors import InputError
from artifactkit.format.akit import MAGIC
from artifactkit.format.legacy import LegacyArtifact, looks_like_legacy, read_legacy
from artifactkit.format.reader import ArtifactReader
from artifactkit.io import MAX_ARTIFACT_FILE_BYTES, read_bounded


def read_input(path: str | Path) -> bytes:
    """The bytes of an input that may be an artifact or a checkpoint: all of it, read
    bounded (MAX_ARTIFACT_FILE_BYTES), unless it is a regular file that cannot be an
    artifact -- one too large, or one that starts neither like an .akit nor like a legacy
    file -- then only its first 16 bytes, enough to tell a checkpoint (which
    `artifactkit.checkpoint.load_checkpoint` reads itself, within its own limit, so a
    checkpoint is read once). Anything else (a pipe) is read whole, as it can be read once."""
    path = Path(path)
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                head = handle.read(16)
        except OSError:
            head = None  # read_bounded says why
        too_large = path.stat().st_size > MAX_ARTIFACT_FILE_BYTES
        if head is not None and not head.startswith(MAGIC[:4]) and (too_large or not looks_like_legacy(head)):
            return head
    return read_bounded(path, MAX_ARTIFACT_FILE_BYTES, "an artifact")


def open_artifact(path: str | Path) -> ArtifactReader | LegacyArtifact:
    path = Path(path)
    data = read_bounded(path, MAX_ARTIFACT_FILE_BYTES, "an artifact")
    if data[:4] == MAGIC[:4]:
        return ArtifactReader(data, str(path)).validate()
    legacy = read_legacy(data, str(path))
    if legacy is not None:
        return legacy
    if data[:2] == b"PK":
        raise InputError(f"{path}: is a torch.save checkpoint, not an artifact; pack it first with "
                         "'artifactkit pack' (or pass it to 'classify' / 'size-report')")
    raise InputError(f"{path}: not an artifact (unrecognised content, {len(data):,} bytes); pass an .akit file "
                     "from 'artifactkit pack' or a legacy .ptz (int8_clean_per_row_v1 or seed int6)")
