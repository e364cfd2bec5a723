"""The .akit format: round trips, determinism and hostile input."""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import zlib

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.format.akit import MAGIC, PREAMBLE, pack_state_dict
from artifactkit.format.codecs import available_codecs
from artifactkit.format.reader import read_artifact
from artifactkit.plan.policy import resolve_policy
from artifactkit.synthetic import seed_shaped_state_dict

SMALL = dict(layers=2, dim=384, kv_heads=4, head_dim=64, vocab=256)


def every_scheme_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "qo_bank": torch.randn(4, 300, 300),  # int6 after expansion
        "b.0.m.u": torch.randn(400, 200).to(torch.bfloat16),  # int6, bf16 restored
        "tok_emb.weight": torch.randn(512, 256),  # int8
        "small.weight": torch.randn(16, 16).to(torch.float16),  # fp16
        "skip_w": torch.randn(3, 8),  # control fp32
        "blocks.0.rm": torch.randn(2, 8, dtype=torch.float64),  # control, float64 restored
        "position_ids": torch.arange(10),  # raw int64
        "mask": torch.tensor([True, False, True]),  # raw bool
        "zero.weight": torch.zeros(300, 300),  # all-zero, int8 (other)
        "ctx_proj.weight": torch.randn(8, 8),  # dropped
    }


@pytest.mark.parametrize("codec", available_codecs() + ["ans", "auto"])
def test_round_trip_every_scheme_and_codec(codec):
    state = every_scheme_state()
    packed = pack_state_dict(state, codec=codec)
    reader = read_artifact(packed.data)
    restored = reader.state_dict()
    assert set(restored) == set(state) - {"ctx_proj.weight"}
    assert reader.dropped == ["ctx_proj.weight"]
    for name, tensor in restored.items():
        assert tensor.dtype == state[name].dtype and tensor.shape == state[name].shape, name
    assert torch.equal(restored["position_ids"], state["position_ids"])
    assert torch.equal(restored["mask"], state["mask"])
    assert torch.equal(restored["skip_w"], state["skip_w"])
    assert torch.equal(restored["small.weight"], state["small.weight"])
    assert torch.equal(restored["zero.weight"], state["zero.weight"])
    # quantized tensors restore exactly what the quantizer produced
    by_name = {e.name: e for e in packed.model.entries}
    expected_q = by_name["b.0.a.q"].quantized.dequantize()
    assert torch.equal(reader.expanded_state_dict()["b.0.a.q"], expected_q)
    assert (restored["qo_bank"] - state["qo_bank"]).norm() / state["qo_bank"].norm() < 0.08  # int6, t(4) tails
    schemes = {t.name: t.label for t in reader.tensors}
    assert schemes["b.1.a.o"] == "int6" and schemes["tok_emb.weight"] == "int8"
    assert schemes["small.weight"] == "fp16" and schemes["skip_w"] == "fp32" and schemes["mask"] == "raw"


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_round_trips(bits):
    state = {"b.0.a.q": torch.randn(300, 300)}
    packed = pack_state_dict(state, resolve_policy("int6-mixed", bits=f"attn={bits}"), codec="zlib")
    reader = read_artifact(packed.data)
    quantized = reader.quantized()["b.0.a.q"]
    assert torch.equal(quantized.codes, packed.model.entries[0].quantized.codes)
    assert quantized.codes.abs().max() <= 2 ** (bits - 1) - 1


def test_pack_is_deterministic(tmp_path):
    state = seed_shaped_state_dict(**SMALL)
    ckpt = tmp_path / "c.pt"
    torch.save(state, ckpt)
    runner = CliRunner()
    digests = []
    for index in range(2):
        out = tmp_path / f"a{index}.akit"
        result = runner.invoke(main, ["pack", str(ckpt), "-o", str(out), "--codec", "zstd"])
        assert result.exit_code == 0, result.stderr
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


@functools.lru_cache(maxsize=1)  # deterministic, and packing it is most of each hostile-file test's time
def _packed_bytes() -> bytes:
    return pack_state_dict(every_scheme_state(), codec="zlib").data


def _rewrite_header(data: bytes, change) -> bytes:
    _, version, header_len = PREAMBLE.unpack_from(data)
    header = json.loads(zlib.decompress(data[PREAMBLE.size : PREAMBLE.size + header_len]))
    change(header)
    block = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    return PREAMBLE.pack(MAGIC, version, len(block)) + block + data[PREAMBLE.size + header_len :]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d[: len(d) // 2], "truncated|declares"),
    (lambda d: d[:10], "shorter than"),
    (lambda d: b"NOPE" + d[4:], "bad magic"),
    (lambda d: d[:8] + struct.pack("<H", 99) + d[10:], "version 99"),
    (lambda d: d + b"extra", "trailing"),
    (lambda d: d[:-3] + bytes(b ^ 0xFF for b in d[-3:]), "sha256"),
    (lambda d: d[:PREAMBLE.size] + b"\x00" * 20 + d[PREAMBLE.size + 20 :], "header is corrupt"),
    (lambda d: _rewrite_header(d, lambda h: h["tensors"][0].update(shape=[1 << 30, 1 << 30])), "element limit|declares"),
    (lambda d: _rewrite_header(d, lambda h: h["sections"][0].update(raw_bytes=h["sections"][0]["raw_bytes"] * 1000)),
     "declares"),
    (lambda d: _rewrite_header(d, lambda h: h["tensors"][0].update(scheme="evil")), "unknown scheme"),
])
def test_hostile_or_damaged_files_are_clean_errors(tmp_path, mutate, message):
    bad = mutate(_packed_bytes())
    with pytest.raises(InputError, match=message):
        read_artifact(bad).state_dict()
    path = tmp_path / "bad.akit"
    path.write_bytes(bad)
    for command in (["inspect", str(path)], ["unpack", str(path), "-o", str(tmp_path / "o.pt")], ["check", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: ") and str(path) in result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "o.pt").exists()


def test_header_lying_about_section_size_cannot_inflate(tmp_path):
    """A section whose stream inflates past what the tensors need is refused, not allocated."""
    state = {"zero.weight": torch.zeros(300, 300)}
    packed = pack_state_dict(state, codec="zlib")
    reader = read_artifact(packed.data)
    assert reader.section_spans["codes"][3] == 300 * 300
    from artifactkit.format import codecs

    bomb = zlib.compress(b"\x00" * (50 << 20))
    with pytest.raises(InputError, match="more than"):
        codecs.decompress("zlib", bomb, 300 * 300, "bomb")


def test_unpack_restores_banks_and_loads_with_weights_only(tmp_path):
    state = seed_shaped_state_dict(**SMALL)
    ckpt, art, out = tmp_path / "c.pt", tmp_path / "c.akit", tmp_path / "u.pt"
    torch.save(state, ckpt)
    runner = CliRunner()
    assert runner.invoke(main, ["pack", str(ckpt), "-o", str(art)]).exit_code == 0
    result = runner.invoke(main, ["unpack", str(art), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    restored = torch.load(out, weights_only=True)
    assert list(restored) == list(state)
    assert restored["qo_bank"].shape == state["qo_bank"].shape
    assert (restored["qo_bank"] - state["qo_bank"]).norm() / state["qo_bank"].norm() < 0.08  # int6, t(4) tails


def test_inspect_dev_zero_ends_quickly_with_the_cap_in_the_error():
    for command in (["inspect", "/dev/zero"], ["check", "/dev/zero"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "268,435,456-byte limit" in result.stderr, result.stderr


def _bank_edit(header, **changes):
    header["banks"][0].update(changes)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda h: h["tensors"][1].update(name=h["tensors"][0]["name"]), "is listed twice"),
    (lambda h: h["banks"][0]["members"].__setitem__(0, "no.such.tensor"), "which is not a stored tensor"),
    (lambda h: _bank_edit(h, shape=[h["banks"][0]["shape"][0], 7, 7]), "but its member"),
    (lambda h: h["banks"].append(dict(h["banks"][0], name="twice")), "belongs to two banks"),
    (lambda h: _bank_edit(h, name="skip_w"), "the name of another tensor"),
    (lambda h: h["sections"][2].update(codec="snappy"), "unknown codec 'snappy'"),
    (lambda h: h["sections"][1].update(codec="ans"), "unknown codec 'ans'"),
    (lambda h: h["tensors"][4].update(dtype="float8_e4m3fn"), "no artifact stores"),
    (lambda h: h["tensors"][4].update(dtype="complex128"), "no artifact stores"),
    (lambda h: h["tensors"][4].update(shape=[1 << 32, 1 << 32]), "element limit"),
    (lambda h: h["tensors"][4].update(shape=[True, 16]), "invalid shape"),
    (lambda h: h["sections"].__setitem__(slice(2, 4), h["sections"][3:1:-1]), "in that order"),
    (lambda h: h.update(policy=[1]), "'policy' is not a dict"),
])
def test_lying_headers_are_refused_by_inspect_check_and_unpack(tmp_path, mutate, message):
    bad = _rewrite_header(_packed_bytes(), mutate)
    path = tmp_path / "lie.akit"
    path.write_bytes(bad)
    for command in (["inspect", str(path)], ["check", str(path)], ["unpack", str(path), "-o", str(tmp_path / "o.pt")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and message in result.stderr, (command, result.stderr)
    assert not (tmp_path / "o.pt").exists()


def test_check_decodes_so_it_never_passes_what_unpack_rejects(tmp_path):
    """A section stream that inflates past its declared size passes every structural check;
    check (and inspect) decode it, bounded, and refuse it as unpack does."""
    state = {"skip_w": torch.zeros(300, 300)}  # control: one fp32 section
    data = pack_state_dict(state, codec="zlib").data
    _, version, header_len = PREAMBLE.unpack_from(data)
    header = json.loads(zlib.decompress(data[PREAMBLE.size : PREAMBLE.size + header_len]))
    bomb = zlib.compress(bytes(64 << 20))
    payload, offset = b"", 0
    for section in header["sections"]:
        part = data[PREAMBLE.size + header_len + offset : PREAMBLE.size + header_len + offset + section["stored_bytes"]]
        offset += section["stored_bytes"]
        if section["name"] == "fp32":
            part = bomb
            section["stored_bytes"] = len(bomb)
        payload += part
    header.update(payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    block = zlib.compress(json.dumps(header).encode())
    path = tmp_path / "bomb.akit"
    path.write_bytes(PREAMBLE.pack(MAGIC, version, len(block)) + block + payload)
    for command in (["check", str(path)], ["inspect", str(path)], ["unpack", str(path), "-o", str(tmp_path / "o.pt")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "decompressed to more than" in result.stderr, (command, result.stderr)


def test_pack_refuses_float8_it_could_not_unpack(tmp_path):
    ckpt = tmp_path / "f8.pt"
    torch.save({"b.0.a.q": torch.randn(300, 300).to(torch.float8_e4m3fn),
                "b.0.a.k": torch.randn(8, 8).to(torch.float8_e5m2), "ok.weight": torch.randn(4, 4)}, ckpt)
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "m.akit")])
    assert result.exit_code == 2 and not (tmp_path / "m.akit").exists()
    assert "b.0.a.q (float8_e4m3fn), b.0.a.k (float8_e5m2): dtype not storable" in result.stderr
    assert "nothing was written" in result.stderr and result.stderr.count("\n") == 1


def test_pack_refuses_nan_in_an_int_tensor_and_keeps_it_exactly_in_fp16(tmp_path):
    weight = torch.randn(300, 300)
    weight[3, 4], weight[5, 6] = float("nan"), float("inf")
    ckpt, out = tmp_path / "nan.pt", tmp_path / "m.akit"
    torch.save({"b.0.a.q": weight}, ckpt)
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "b.0.a.q (1 NaN, 1 inf): NaN / inf values" in result.stderr and '"b.0.a.q" = "control"' in result.stderr
    rules = tmp_path / "keep.toml"
    rules.write_text('[exact]\n"b.0.a.q" = "control"\n')  # the fix the error gives: fp32, stored exactly
    small = torch.tensor([[1.0, float("nan")], [float("-inf"), 2.0]])
    torch.save({"b.0.a.q": weight, "small.weight": small}, ckpt)
    assert CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(out), "--rules", str(rules)]).exit_code == 0
    restored = read_artifact(out).state_dict()
    for name, original in (("b.0.a.q", weight), ("small.weight", small)):  # fp32 by the rule, fp16 as small
        assert torch.equal(restored[name].isnan(), original.isnan())
        assert torch.equal(restored[name].nan_to_num(), original.to(restored[name].dtype).nan_to_num())


@pytest.mark.parametrize(("scale", "notice"), [
    (1e30, "300 of 300 rows hold values beyond int6 with fp16 row scales (max |w| "),
    (1e-30, "300 of 300 nonzero rows are too small for fp16 row scales"),
])
def test_pack_notices_extreme_magnitudes_with_the_relative_error(tmp_path, scale, notice):
    ckpt = tmp_path / "big.pt"
    torch.save({"b.0.a.q": torch.randn(300, 300) * scale, "b.0.a.k": torch.randn(300, 300)}, ckpt)
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "m.akit")])
    assert result.exit_code == 0 and notice in result.stderr and "relative error 1" in result.stderr
    assert result.stderr.count("notice: b.0.a.q") == 1 and "b.0.a.k" not in result.stderr  # ordinary weights: silent


def test_reader_refuses_an_ans_blob_asking_for_huge_decode_tables():
    from artifactkit.format.validate import check_ans_tables

    blob = bytearray(24)
    blob[4], blob[6:8] = 15, struct.pack("<H", 65535)
    with pytest.raises(InputError, match="65,535 decode tables"):
        check_ans_tables(bytes(blob), "x")
    blob[6:8] = struct.pack("<H", 224)
    check_ans_tables(bytes(blob), "x")  # what the encoder writes at most
