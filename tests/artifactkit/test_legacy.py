"""Legacy readers on files built here in the two formats found in the wild."""

from __future__ import annotations

import io
import json
import lzma
import zlib

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.format.open import open_artifact


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_public_baseline_int8_ptz(tmp_path):
    weight = torch.randn(64, 32)
    scale = weight.abs().amax(dim=1) / 127
    codes = torch.round(weight / scale[:, None]).to(torch.int8)
    obj = {"__quant_format__": "int8_clean_per_row_v1",
           "quantized": {"blocks.0.attn.c_q.weight": codes},
           "scales": {"blocks.0.attn.c_q.weight": scale.to(torch.float16)},
           "dtypes": {"blocks.0.attn.c_q.weight": "bfloat16"},
           "passthrough": {"blocks.0.attn_scale": torch.ones(32, dtype=torch.float16)},
           "passthrough_orig_dtypes": {"blocks.0.attn_scale": "float32"},
           "qmeta": {"blocks.0.attn.c_q.weight": {"scheme": "per_row", "axis": 0}}}
    path = tmp_path / "final_model.bin"  # detected by content, not name
    path.write_bytes(zlib.compress(_saved(obj), 9))
    artifact = open_artifact(path)
    assert artifact.format == "legacy:int8_clean_per_row_v1" and artifact.codec == "zlib"
    state = artifact.state_dict()
    expected = (codes.float() * scale.to(torch.float16).float()[:, None]).to(torch.bfloat16)
    assert torch.equal(state["blocks.0.attn.c_q.weight"], expected)
    assert state["blocks.0.attn_scale"].dtype == torch.float32
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    document = json.loads(result.stdout)
    assert document["format"] == "legacy:int8_clean_per_row_v1"
    assert {t["name"]: t["scheme"] for t in document["tensors"]}["blocks.0.attn.c_q.weight"] == "int8"


def test_seed_int6_ptz(tmp_path):
    weight = torch.randn(16, 8)
    scale = (weight.abs().amax(dim=1) / 31).to(torch.float16)
    codes = torch.clamp(torch.round(weight / scale.float()[:, None]), -31, 31).to(torch.int8)
    obj = {"w": {"b.0.a.q.q": codes, "b.0.a.q.s": scale, "skip_w": torch.ones(4), "tok_emb.weight": torch.ones(4, 4)},
           "m": {"b.0.a.q": {"t": "i6"}, "skip_w": "ctrl", "tok_emb.weight": "pt"}}
    path = tmp_path / "final_model.int6.ptz"
    path.write_bytes(lzma.compress(_saved(obj)))
    artifact = open_artifact(path)
    assert artifact.format == "legacy:seed_int6"
    state = artifact.state_dict()
    assert torch.equal(state["b.0.a.q"], codes.float() * scale.float()[:, None])
    assert {t.name: t.label for t in artifact.tensors}["b.0.a.q"] == "int6"
    out = tmp_path / "u.pt"
    result = CliRunner().invoke(main, ["unpack", str(path), "-o", str(out)])
    assert result.exit_code == 0 and set(torch.load(out, weights_only=True)) == {"b.0.a.q", "skip_w", "tok_emb.weight"}


class Evil:
    """Any non-tensor class: weights_only unpickling must refuse it."""


def test_legacy_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.ptz"
    path.write_bytes(lzma.compress(_saved({"w": {"x": Evil()}, "m": {}})))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2 and "weights_only" in result.stderr


def _seed_file(tmp_path, edit) -> str:
    weight = torch.randn(16, 8)
    scale = (weight.abs().amax(dim=1) / 31).to(torch.float16)
    codes = torch.clamp(torch.round(weight / scale.float()[:, None]), -31, 31).to(torch.int8)
    obj = {"w": {"b.0.a.q.q": codes, "b.0.a.q.s": scale, "skip_w": torch.ones(4)},
           "m": {"b.0.a.q": {"t": "i6"}, "skip_w": "ctrl"}}
    edit(obj)
    path = tmp_path / "final_model.int6.ptz"
    path.write_bytes(lzma.compress(_saved(obj)))
    return str(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda o: o["m"]["b.0.a.q"].update(dtype="complex128"), "restored as 'complex128'"),
    (lambda o: o["m"]["b.0.a.q"].update(dtype="torch.float8_e4m3fn"), "restored as 'float8_e4m3fn'"),
    (lambda o: o["m"]["b.0.a.q"].update(dtype="save"), "restored as 'save'"),
    (lambda o: o["w"].update({"b.0.a.q.q": torch.randn(16, 8)}), "not int8 codes"),
    (lambda o: o["w"].update({"b.0.a.q.s": torch.ones(3)}), "one float scale per row"),
    (lambda o: o["w"].update(skip_w=torch.ones(4, dtype=torch.complex64)), "complex64"),
    (lambda o: o["w"].update({"b.0.a.q.q": "codes"}), "is a str, not a tensor"),
])
def test_seed_format_asking_for_complex128_or_lying_is_refused(tmp_path, edit, message):
    path = _seed_file(tmp_path, edit)
    for command in (["inspect", path], ["unpack", path, "-o", str(tmp_path / "u.pt")], ["check", path]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and message in result.stderr and "unexpected" not in result.stderr, result.stderr
    assert not (tmp_path / "u.pt").exists()


def test_legacy_payload_in_torch_old_format_is_refused(tmp_path):
    """The baseline and the seed write torch.save zips; torch's pre-1.6 format allocates
    storages as its pickle declares them, so it is not read from a .ptz at all."""
    path = tmp_path / "old.ptz"
    buffer = io.BytesIO()
    torch.save({"w": {}, "m": {}}, buffer, _use_new_zipfile_serialization=False)
    path.write_bytes(lzma.compress(buffer.getvalue()))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2 and "not a torch.save zip archive" in result.stderr
