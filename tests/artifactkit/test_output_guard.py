"""Regression: a command whose output path resolves to one of its inputs (the same path,
a symlink or a hard link) used to overwrite that input and exit 0. Now it refuses with
exit 2 before any work, and the input is byte-for-byte untouched."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.io import refuse_overwriting_inputs
from artifactkit.synthetic import seed_shaped_state_dict


def _run(args: list[str]):
    return CliRunner().invoke(main, args)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(seed_shaped_state_dict(layers=1, dim=256, kv_heads=2, head_dim=64, vocab=128), path)
    return path


@pytest.fixture
def artifact(tmp_path, checkpoint):
    path = tmp_path / "model.akit"
    assert _run(["pack", str(checkpoint), "-o", str(path)]).exit_code == 0
    return path


def _aliases(tmp_path, target):
    """The same file under three names: itself, a symlink and a hard link."""
    symlink, hardlink = tmp_path / f"sym-{target.name}", tmp_path / f"hard-{target.name}"
    symlink.symlink_to(target)
    os.link(target, hardlink)
    return [target, symlink, hardlink]


def _assert_refused(result, before: bytes, path) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "destroy the input" in lines[0], result.stderr
    assert path.read_bytes() == before


def test_pack_refuses_to_overwrite_its_checkpoint(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    for output in _aliases(tmp_path, checkpoint):
        _assert_refused(_run(["pack", str(checkpoint), "-o", str(output)]), before, checkpoint)


def test_pack_refuses_to_overwrite_a_code_file(tmp_path, checkpoint):
    code = tmp_path / "train_gpt.py"
    code.write_text("print(1)\n")
    before = code.read_bytes()
    _assert_refused(_run(["pack", str(checkpoint), "--code", str(code), "-o", str(code)]), before, code)


def test_unpack_refuses_to_overwrite_its_artifact(tmp_path, artifact):
    before = artifact.read_bytes()
    for output in _aliases(tmp_path, artifact):
        _assert_refused(_run(["unpack", str(artifact), "-o", str(output)]), before, artifact)


def test_export_loader_refuses_to_overwrite_its_artifact(tmp_path, artifact):
    before = artifact.read_bytes()
    for output in _aliases(tmp_path, artifact):
        _assert_refused(_run(["export-loader", "--artifact", str(artifact), "-o", str(output)]), before, artifact)


def test_size_report_refuses_outputs_that_are_inputs(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    _assert_refused(_run(["size-report", str(checkpoint), "--no-what-if", "--codecs", "none",
                          "--markdown", str(checkpoint)]), before, checkpoint)


def test_fit_refuses_to_overwrite_its_checkpoint(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    _assert_refused(_run(["fit", str(checkpoint), "--budget", "16000000", "-o", str(checkpoint)]), before, checkpoint)


def test_distinct_outputs_still_write(tmp_path, artifact):
    out = tmp_path / "state.pt"
    assert _run(["unpack", str(artifact), "-o", str(out)]).exit_code == 0
    assert torch.load(out, weights_only=True)


def test_two_outputs_naming_one_file_are_refused(tmp_path):
    with pytest.raises(InputError, match="same file"):
        refuse_overwriting_inputs({"--plot": tmp_path / "a.png", "--markdown": tmp_path / "." / "a.png"}, [])
