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


def test_compressed_zip_entry_is_refused_before_torch_reads_it(tmp_path):
    """torch.save stores entries; a deflated one could inflate past the file (a zip bomb)."""
    import io
    import zipfile

    source = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, source)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(source.getvalue())) as original, zipfile.ZipFile(bomb, "w") as target:
        for info in original.infolist():
            data = bytes(8 << 20) if info.filename.endswith("data/0") else original.read(info)
            target.writestr(info.filename, data, zipfile.ZIP_DEFLATED)
    with pytest.raises(InputError, match="is compressed, which torch.save never writes"):
        load_checkpoint(bomb)


def test_overlapping_zip_entries_are_refused(tmp_path):
    import io
    import struct
    import zipfile

    source = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(1 << 16 if i == 0 else 1) for i in range(8)}, source)
    data = bytearray(source.getvalue())
    first = next(i for i in zipfile.ZipFile(io.BytesIO(bytes(data))).infolist() if i.filename.endswith("/data/0"))
    position = data.find(b"PK\x01\x02")
    while position != -1:  # point every other storage's directory record at storage 0's bytes
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if b"/data/" in data[position + 46 : position + 46 + name_length]:
            struct.pack_into("<III", data, position + 16, first.CRC, first.compress_size, first.file_size)
            struct.pack_into("<I", data, position + 42, first.header_offset)
        position = data.find(b"PK\x01\x02", position + 46 + name_length + extra_length + comment_length)
    path = tmp_path / "overlap.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="overlapping entries"):
        load_checkpoint(path)


def test_a_device_or_pipe_is_not_read_as_a_checkpoint():
    with pytest.raises(InputError, match="not a regular file"):
        load_checkpoint("/dev/zero")


def test_refusal_names_what_the_unpickler_refused_in_one_line(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(InputError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert "weights_only" in message and "Linear" in message and "\n" not in message
