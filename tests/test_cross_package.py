"""The contract between `train` (names it saves) and `artifactkit` (names it knows)."""

from __future__ import annotations

import pytest
import torch

from artifactkit.checkpoint import load_checkpoint
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.classify import classify_state_dict
from artifactkit.quantize.apply import quantize_state_dict
from train.config import preset_config
from train.model import build_model
from train.testing import tiny_checkpoint


def test_trained_checkpoint_is_fully_classified(tmp_path):
    loaded = load_checkpoint(tiny_checkpoint(tmp_path / "ckpt.pt", steps=2, jepa_weight=0.3))
    assert loaded.arch == "train.model:build_model"
    expanded, banks = expand_banks(loaded.state_dict)
    assert {b.name for b in banks} == {"qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"}
    classification = classify_state_dict(expanded)
    other = [t.name for t in classification.tensors if t.category in ("other", "training_only")]
    assert other == [], f"train saves tensors artifactkit cannot classify or should not ship: {other}"


@pytest.mark.parametrize("preset", ["seed11", "mid"])
def test_preset_model_gets_int6_matrices_and_no_fallthrough(preset):
    """seed11 and mid: every attention and MLP matrix is above the small-tensor
    threshold, so the default policy int6-quantizes all of them."""
    config = preset_config(preset).model
    with torch.device("meta"):
        model = build_model(config.to_dict())
    state = {name: torch.zeros(p.shape, dtype=torch.float32) for name, p in model.state_dict().items()}
    plan = quantize_state_dict(state).entries
    by_category = {}
    for entry in plan:
        by_category.setdefault(entry.category, set()).add(entry.scheme.label)
    assert "other" not in by_category
    assert by_category["attn"] == {"int6"} and by_category["mlp"] == {"int6"}
    assert "int8" in by_category["embed"]
    assert sum(1 for e in plan if e.category in ("attn", "mlp")) == 6 * config.num_layers
