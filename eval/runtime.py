"""Runtime helpers both `train` and `artifactkit` use: torchrun's rank variables, the
device choice, joining the process group, SentencePiece loading with the file's sha256,
and JSON config files. One version of each, so the trainer and the toolkit cannot pick
different devices or hash a tokenizer differently.

Errors are `SetupError` (a ValueError) whose message names the file or option, the cause
and the fix; both command lines print it as one `error:` line.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class SetupError(ValueError):
    """A device, tokenizer or config file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class RankInfo:
    """torchrun's rank variables: the only environment variables this project reads."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> RankInfo:
        return cls(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, ranks: RankInfo | None = None) -> torch.device:
    """`auto` -> this rank's CUDA device when one is visible, else the CPU; `cuda` without
    a visible device is an error rather than a silent CPU run."""
    ranks = ranks or RankInfo.from_environment()
    if choice not in DEVICE_CHOICES:
        raise SetupError(f"--device {choice}: unknown device; use one of {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise SetupError("--device cuda: no CUDA device is visible to this torch build; use --device cpu or auto")
        return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: torch.device, ranks: RankInfo | None = None) -> bool:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1): NCCL on
    CUDA, gloo on the CPU. Returns True when this call created the group (the caller
    destroys it)."""
    ranks = ranks or RankInfo.from_environment()
    if not ranks.enabled or not torch.distributed.is_available() or torch.distributed.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_tokenizer(path: str | os.PathLike) -> tuple[sentencepiece.SentencePieceProcessor, str]:
    """(processor, sha256 of the model file) for a SentencePiece `.model`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SetupError(f"{path}: cannot read the tokenizer ({exc.strerror}); pass a SentencePiece .model file") from exc
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(data)
    except Exception as exc:  # noqa: BLE001 - sentencepiece raises bare RuntimeError/OSError
        raise SetupError(f"{path}: not a SentencePiece model ({exc}); pass the tokenizer's .model file") from exc
    return processor, hashlib.sha256(data).hexdigest()


def load_json_object(path: str | os.PathLike, option: str = "--config") -> dict[str, Any]:
    """A JSON file that must hold one object (factory arguments, a model config)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SetupError(f"{path}: cannot read the config ({exc.strerror}); check the {option} path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SetupError(f"{path}: not valid JSON ({exc}); {option} takes a JSON object") from exc
    if not isinstance(data, dict):
        raise SetupError(f"{path}: holds a JSON {type(data).__name__}, not an object; {option} takes a JSON object")
    return data
