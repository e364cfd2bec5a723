"""Loading checkpoints of every supported kind, safely."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from artifactkit.checkpoint import load_checkpoint
from artifactkit.cli import main
from artifactkit.errors import InputError


class NotATensor:
    pass


def test_project_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"format": "artifactkit-checkpoint/1", "state_dict": {"tok_emb.weight": torch.ones(2, 2)},
                "config": {"model_dim": 2}, "arch": "train.model:build_model", "step": 7, "metrics": {"loss": 1.0},
                "tokenizer_sha256": "ab"}, path)
    loaded = load_checkpoint(path)
    assert loaded.kind == "artifactkit-checkpoint/1" and loaded.arch == "train.model:build_model"
    assert loaded.config == {"model_dim": 2} and loaded.step == 7 and list(loaded.state_dict) == ["tok_emb.weight"]


def test_raw_state_dict_with_foreign_prefixes(tmp_path):
    path = tmp_path / "raw.pt"
    torch.save({"module._orig_mod.tok_emb.weight": torch.ones(2), "module._orig_mod.b.0.a.q": torch.ones(2, 2)}, path)
    loaded = load_checkpoint(path)
    assert set(loaded.state_dict) == {"tok_emb.weight", "b.0.a.q"}
    assert any("module." in n for n in loaded.notices) and any("_orig_mod." in n for n in loaded.notices)


def test_safetensors_and_nested(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"wte.weight": torch.ones(3, 2)}, str(path))
    assert load_checkpoint(path).kind == "safetensors"
    nested = tmp_path / "nested.pt"
    torch.save({"model": {"wte.weight": torch.ones(3, 2)}, "optimizer": {}}, nested)
    loaded = load_checkpoint(nested)
    assert loaded.kind == "nested:model" and "wte.weight" in loaded.state_dict


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a PyTorch checkpoint"),
    (b"hello world, not a checkpoint", "not a PyTorch checkpoint"),
    (b"PK\x03\x04 broken zip", "not a readable PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotATensor(), "w": torch.ones(1)}, path)
    with pytest.raises(InputError, match="weights_only"):
        load_checkpoint(path)
    result = CliRunner().invoke(main, ["classify", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_truncated_checkpoint_via_cli(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    for command in ("classify", "pack"):
        args = [command, str(path)] + (["-o", str(tmp_path / "o.akit")] if command == "pack" else [])
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and str(path) in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o.akit").exists()
    result = CliRunner().invoke(main, ["--debug", "classify", str(path)])
    assert result.exit_code == 2
