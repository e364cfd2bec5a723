"""Helpers for tests (this package's and other packages'): a micro training config and
a real tiny checkpoint produced by the real loop on the embedded corpus.

    from train.testing import tiny_checkpoint
    path = tiny_checkpoint(tmp_path / "ckpt.pt")   # a few seconds on a CPU
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from train.config import TrainConfig, apply_overrides, preset_config
from train.data import PreparedData


def micro_config(out: str | os.PathLike, prepared: PreparedData | None = None, **overrides) -> TrainConfig:
    """The `tiny` preset shrunk to a 2-layer, 64-wide model on 512-token steps, writing
    to `out`. With `prepared`, the run reads those shards instead of preparing its own."""
    config = preset_config("tiny")
    config = replace(config, model=replace(config.model, num_layers=2, model_dim=64, num_heads=2,
                                           num_kv_heads=1, xsa_last_n=1))
    base = {"out": str(out), "seq_len": 64, "batch_tokens": 512, "iterations": 4, "warmup_steps": 2,
            "val_tokens": 2048, "save_every": 0, "log_every": 1, "muon_momentum_warmup_steps": 4,
            "device": "cpu", "jepa_latent_dim": 32, "cpu_threads": 1}
    if prepared is not None:
        base.update({"train_glob": prepared.train_glob, "val_glob": prepared.val_glob,
                     "tokenizer": str(prepared.tokenizer)})
    base.update(overrides)
    return apply_overrides(config, base, "micro_config")


def tiny_checkpoint(path: str | os.PathLike, steps: int = 2, jepa_weight: float = 0.3,
                    prepared: PreparedData | None = None) -> Path:
    """Train a micro model for `steps` steps (embedded corpus unless `prepared` is
    given) and copy its ckpt.pt to `path`. The run directory is `path` + ".run"."""
    from train.loop import run_training

    path = Path(path)
    run_dir = path.with_name(path.name + ".run")
    result = run_training(micro_config(run_dir, prepared, iterations=steps, jepa_weight=jepa_weight),
                          console=lambda text: None)
    if result.checkpoint.resolve() != path.resolve():
        shutil.copyfile(result.checkpoint, path)
    return path
