"""Loading checkpoints: the project's checkpoint dict, a raw state dict, or a
`.safetensors` file. Everything goes through `torch.load(weights_only=True)`; nothing
is ever unpickled beyond that, and torch's own warnings about a file (an old pickle
protocol, a TorchScript archive) never reach the terminal before our `error:` line.
Memory is bounded before torch sees the file: it must be a regular file of at most
MAX_CHECKPOINT_FILE_BYTES, and a torch.save zip must hold stored (uncompressed) entries
that add up to no more than the file (a deflated or overlapping entry is a zip bomb;
torch.save writes neither). Foreign key prefixes (`_orig_mod.`, `module.`) are
normalised here, once, with a notice."""

from __future__ import annotations

import io
import pickle
import re
import stat
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from artifactkit.errors import InputError
from artifactkit.io import MAX_CHECKPOINT_FILE_BYTES

CHECKPOINT_FORMAT = "artifactkit-checkpoint/1"

# Prefixes added by torch.compile (`_orig_mod.`) and DataParallel/DDP (`module.`).
FOREIGN_PREFIXES = ("_orig_mod.", "module.")

# Keys under which other training scripts nest their weights.
NESTED_STATE_KEYS = ("state_dict", "model", "model_state_dict", "module")


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk, whatever its original layout."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str  # "artifactkit-checkpoint/1" | "state_dict" | "nested:<key>" | "safetensors"
    config: dict[str, Any] | None = None
    arch: str | None = None
    step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    tokenizer_sha256: str | None = None
    notices: list[str] = field(default_factory=list)
    train_config: dict[str, Any] | None = None  # how it was trained (seq_len, ...), when recorded

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def strip_foreign_prefixes(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove `_orig_mod.` / `module.` when every key carries it (repeatedly, so
    `module._orig_mod.` also goes). Returns the new dict and notices saying what changed."""
    result = dict(state_dict)
    notices: list[str] = []
    changed = True
    while changed and result:
        changed = False
        for prefix in FOREIGN_PREFIXES:
            if all(key.startswith(prefix) for key in result):
                result = {key[len(prefix) :]: value for key, value in result.items()}
                notices.append(f"notice: stripped the prefix '{prefix}' from all {len(result)} tensor names")
                changed = True
    return result, notices


def _tensors_only(path: Path, mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: state dict key {key!r} is not a string; this is not a model state dict")
        if isinstance(value, torch.Tensor):
            tensors[key] = value
    return tensors


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors is a dependency
        raise InputError(f"{path}: reading .safetensors needs the 'safetensors' package; pip install safetensors") from exc
    try:
        return load_file(str(path))
    except Exception as exc:
        raise InputError(
            f"{path}: not a readable safetensors file ({exc}); re-export it with safetensors.torch.save_file"
        ) from exc


def check_torch_zip(source: str | Path | bytes, where: object, what: str = "PyTorch checkpoint") -> None:
    """Refuse a torch.save zip whose entries could inflate: every entry stored, not
    compressed, and all of them together no larger than the archive itself."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            entries = archive.infolist()
    # What zipfile raises on damaged or foreign archives: a bad directory (BadZipFile), a
    # ZIP64 record without ZIP64 support, lying offsets (ValueError, OSError, EOFError),
    # an unsupported compression method or encryption (NotImplementedError).
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise InputError(f"{where}: not a readable {what} (a broken zip archive: {exc}); the file is damaged or "
                         "not written by torch.save") from exc
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise InputError(f"{where}: zip entry {compressed[0]!r} is compressed, which torch.save never writes "
                         "(a zip bomb?); re-save the state dict with torch.save")
    declared = sum(e.file_size for e in entries)
    if declared > size:
        raise InputError(f"{where}: its zip entries declare {declared:,} bytes in a {size:,}-byte file "
                         "(overlapping entries: a zip bomb?); re-save the state dict with torch.save")


def _unpickling_cause(exc: BaseException) -> str:
    """The one informative line of torch's weights_only refusal."""
    text = " ".join(str(exc).split())
    found = re.search(r"WeightsUnpickler error: (.*?)( Check the documentation|$)", text)
    return (found.group(1) if found else text or "unpickling refused")[:160]


def torch_load_weights_only(source: str | Path | bytes, where: object, fix: str,
                            what: str = "PyTorch checkpoint") -> Any:
    """`torch.load(weights_only=True)` of a path or bytes, torch's warnings silenced (the
    caller reports), every failure an InputError naming `where` with `fix`. The caller
    has bounded the input (size, and `check_torch_zip` for zip archives)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source,
                              map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{where}: refused to load: it needs more than weights_only unpickling "
                         f"({_unpickling_cause(exc)}); {fix}") from exc
    except RecursionError as exc:
        raise InputError(f"{where}: refused to load: its pickle nests too deeply (a hostile file?); {fix}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever torch raises on a bad file is bad input
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: not a readable {what} ({message[:160]}); {fix}") from exc


def _torch_load(path: Path) -> Any:
    return torch_load_weights_only(path, path, "pass a file written by torch.save (a state dict or an artifactkit "
                                   "checkpoint of plain tensors and containers) or a .safetensors file")


def looks_like_torch_save(head: bytes) -> bool:
    """Whether a file starting with `head` can be torch.save output: a zip archive (or, before
    torch 1.6, a pickle starting 0x80)."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read any supported checkpoint. Raises InputError naming the file, cause and fix."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the checkpoint file inside it (e.g. {path}/ckpt.pt)")
    try:
        info = path.stat()
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: is not a regular file (a device or a pipe); save the checkpoint to a file first")
    if info.st_size > MAX_CHECKPOINT_FILE_BYTES:
        raise InputError(f"{path}: is {info.st_size:,} bytes, over the {MAX_CHECKPOINT_FILE_BYTES:,}-byte limit for "
                         "a checkpoint; save only the model's state dict")
    if head.startswith(b"AKIT"):
        raise InputError(f"{path}: is an .akit artifact, not a checkpoint; use 'artifactkit inspect' or 'unpack'")

    if path.suffix == ".safetensors":
        state = _load_safetensors(path)
        state, notices = strip_foreign_prefixes(state)
        return LoadedCheckpoint(path=path, state_dict=state, kind="safetensors", notices=notices)

    if not looks_like_torch_save(head):
        raise InputError(
            f"{path}: not a PyTorch checkpoint (starts with {head[:4]!r}, neither a torch.save zip nor a pickle); "
            "pass a file written by torch.save or a .safetensors file"
        )
    if head.startswith(b"PK"):
        check_torch_zip(path, path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{path}: contains a {type(obj).__name__}, not a dict of tensors; save model.state_dict() instead"
        )

    if obj.get("format") == CHECKPOINT_FORMAT:
        raw_state = obj.get("state_dict")
        if not isinstance(raw_state, Mapping):
            raise InputError(f"{path}: artifactkit checkpoint has no 'state_dict' dict; the file is damaged")
        state, notices = strip_foreign_prefixes(_tensors_only(path, raw_state))
        config = obj.get("config")
        return LoadedCheckpoint(
            path=path,
            state_dict=state,
            kind=CHECKPOINT_FORMAT,
            config=dict(config) if isinstance(config, Mapping) else None,
            arch=obj.get("arch") if isinstance(obj.get("arch"), str) else None,
            step=int(obj["step"]) if isinstance(obj.get("step"), int) else None,
            metrics=dict(obj.get("metrics") or {}),
            tokenizer_sha256=obj.get("tokenizer_sha256"),
            notices=notices,
            train_config=dict(obj["train_config"]) if isinstance(obj.get("train_config"), Mapping) else None,
        )
    if isinstance(obj.get("format"), str) and str(obj.get("format")).startswith("artifactkit-checkpoint/"):
        raise InputError(
            f"{path}: checkpoint format {obj['format']!r} is newer than this artifactkit understands "
            f"({CHECKPOINT_FORMAT}); upgrade artifactkit"
        )
    if "__quant_format__" in obj or set(obj) == {"w", "m"}:
        raise InputError(
            f"{path}: is a quantized artifact, not a float checkpoint; use 'artifactkit inspect' or 'unpack' on it"
        )

    kind = "state_dict"
    mapping: Mapping[str, Any] = obj
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in NESTED_STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                mapping, kind = obj[key], f"nested:{key}"
                break
    state = _tensors_only(path, mapping)
    if not state:
        raise InputError(
            f"{path}: holds no tensors (top-level keys: {', '.join(sorted(map(str, obj))[:8])}); "
            "pass a state dict or an artifactkit checkpoint"
        )
    state, notices = strip_foreign_prefixes(state)
    if kind != "state_dict":
        notices.insert(0, f"notice: read the tensors nested under '{kind.split(':', 1)[1]}'")
    return LoadedCheckpoint(path=path, state_dict=state, kind=kind, notices=notices)
