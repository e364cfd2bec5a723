"""Build a model from a factory reference (`"module:function"`) and a config dict, then
load a state dict into it with strict key and shape checking.

`artifactkit` never imports `train`: the project's own model is reached the same way a
user's is, through the reference stored in the checkpoint (`train.model:build_model`)
or given with `--model`. Like `python -m`, the current working directory is put on
`sys.path` first, so a module beside the user's checkpoint resolves.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from artifactkit.errors import InputError

MODEL_FIX = "pass the factory that builds this architecture with --model module:function"
LISTED_KEYS = 12


def _ensure_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def resolve_factory(reference: str) -> Callable[[dict[str, Any]], nn.Module]:
    """`"package.module:function"` -> the callable. The current directory is importable."""
    module_name, sep, attribute = str(reference).partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise InputError(
            f"--model {reference!r}: expected a factory reference 'module:function' such as "
            "'train.model:build_model'; fix the option"
        )
    _ensure_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"--model {reference}: cannot import module '{module_name}' ({exc}); run from the directory that "
            "holds it, install it, or " + MODEL_FIX
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything on import
        raise InputError(
            f"--model {reference}: importing '{module_name}' raised {type(exc).__name__}: {exc}; fix that module"
        ) from exc
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise InputError(f"--model {reference}: module '{module_name}' has no '{attribute}'; {MODEL_FIX}")
    if not callable(factory):
        raise InputError(f"--model {reference}: '{attribute}' is not callable; {MODEL_FIX}")
    return factory


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_KEYS])
    return shown + (f", ... ({len(names) - LISTED_KEYS:,} more)" if len(names) > LISTED_KEYS else "")


def key_mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) names between `model` and `state_dict`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        f"{name} {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in set(expected) & set(state_dict)
        if tuple(expected[name].shape) != tuple(state_dict[name].shape)
    )
    return missing, unexpected, wrong_shape


def build_model(
    arch: str,
    config: Mapping[str, Any] | None,
    state_dict: Mapping[str, torch.Tensor],
    where: str = "checkpoint",
    absent_hint: str = "",
) -> nn.Module:
    """`factory(config)` then a strict `load_state_dict`. Missing, unexpected and
    wrong-shape keys are all listed in one InputError (naming `where`) with the fix.
    `absent_hint` is appended when keys are missing (e.g. which tensors an artifact dropped)."""
    factory = resolve_factory(arch)
    try:
        model = factory(dict(config or {}))
    except Exception as exc:  # noqa: BLE001 - a user's factory may raise anything
        raise InputError(
            f"{where}: factory {arch} raised {type(exc).__name__}: {exc}; check the config it receives "
            "(the checkpoint's 'config', or --config FILE.json) or " + MODEL_FIX
        ) from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{where}: factory {arch} returned {type(model).__name__}, not a torch.nn.Module; {MODEL_FIX}")
    missing, unexpected, wrong_shape = key_mismatches(model, state_dict)
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing):,}): {_listing(missing)}{absent_hint}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected):,}): {_listing(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes ({len(wrong_shape):,}): {_listing(wrong_shape)}")
        raise InputError(
            f"{where}: the model built by {arch} does not match the state dict: {'; '.join(parts)}; "
            f"{MODEL_FIX} (and its config with --config FILE.json)"
        )
    model.load_state_dict(dict(state_dict), strict=True)
    return model
