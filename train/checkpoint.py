"""Checkpoints in the project format and the resumable training state.

`RUN_DIR/ckpt.pt` (read by artifactkit): a plain dict with the context encoder's
state_dict only, its config, the factory reference, step, metrics, tokenizer sha256 and
the full training config. `RUN_DIR/train_state.pt` (read only by `--resume`): model,
optimizers, weight EMA / SWA, JEPA head and target banks, data position, RNG. Both
are written atomically and both load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from eval.atomic import atomic_write

CHECKPOINT_FORMAT = "artifactkit-checkpoint/1"
STATE_FORMAT = "artifactkit-train-state/1"
ARCH = "train.model:build_model"
TRAINING_ONLY_PREFIXES = ("predictor.", "ctx_proj.", "tgt_proj.", "target_")


class CheckpointError(ValueError):
    """A checkpoint or training state cannot be used; the message names the file."""


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def context_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The context encoder's tensors (CPU, contiguous). Refuses training-only names, so
    a model that grew a JEPA submodule fails loudly instead of leaking it."""
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    leaked = [name for name in state if name.startswith(TRAINING_ONLY_PREFIXES)]
    if leaked:
        raise CheckpointError(f"model state_dict contains training-only tensors {leaked[:5]}; "
                              "keep JEPA modules outside the context encoder")
    return state


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_config: dict, step: int, metrics: dict,
                    tokenizer_sha256: str, train_config: dict) -> Path:
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": context_state_dict(model),
        "config": dict(model_config),
        "arch": ARCH,
        "step": int(step),
        "metrics": dict(metrics),
        "tokenizer_sha256": tokenizer_sha256,
        "train_config": train_config,
    }
    return atomic_torch_save(checkpoint, path)


def _load(path: str | os.PathLike, expected_format: str, what: str) -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: {what} not found; check the path") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise CheckpointError(f"{path}: cannot load {what} ({type(exc).__name__}: {exc}); "
                              "the file is corrupt or not a torch file") from exc
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a {expected_format} file; pass a file this trainer wrote")
    return payload


def load_checkpoint(path: str | os.PathLike) -> dict:
    return _load(path, CHECKPOINT_FORMAT, "checkpoint")


def save_training_state(path: str | os.PathLike, state: dict) -> Path:
    return atomic_torch_save({"format": STATE_FORMAT, **state}, path)


def load_training_state(path: str | os.PathLike) -> dict:
    return _load(path, STATE_FORMAT, "training state")
