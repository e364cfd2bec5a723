"""Open any quantized artifact by content: `.akit` first, then the legacy formats."""

from __future__ import annotations

from pathlib import Path

from artifactkit.errors import InputError
from artifactkit.format.akit import MAGIC
from artifactkit.format.legacy import LegacyArtifact, read_legacy
from artifactkit.format.reader import ArtifactReader


def open_artifact(path: str | Path) -> ArtifactReader | LegacyArtifact:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the artifact file")
    data = path.read_bytes()
    if data[:4] == MAGIC[:4]:
        return ArtifactReader(data, str(path))
    legacy = read_legacy(data, str(path))
    if legacy is not None:
        return legacy
    if data[:2] == b"PK":
        raise InputError(f"{path}: is a torch.save checkpoint, not an artifact; pack it first with "
                         "'artifactkit pack' (or pass it to 'classify' / 'size-report')")
    raise InputError(f"{path}: not an artifact (unrecognised content, {len(data)} bytes); pass an .akit file "
                     "from 'artifactkit pack' or a legacy .ptz (int8_clean_per_row_v1 or seed int6)")
