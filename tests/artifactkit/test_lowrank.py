"""LQER low-rank corrections: the factors against an independent re-implementation of the
public records' packing, and their storage in `.akit` (format version 2): bit-exact
through `unpack` and the exported loader in a separate process, version 1 untouched for
everything else, and lying headers refused."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.format.akit import (
    FORMAT_VERSION,
    LOWRANK_FORMAT_VERSION,
    PREAMBLE,
    encode_artifact,
    write_artifact,
)
from artifactkit.format.loader_export import build_loader, loader_for_artifact
from artifactkit.format.reader import ArtifactReader, read_artifact
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.policy import resolve_policy
from artifactkit.quantize.apply import quantize_state_dict
from artifactkit.quantize.lqer import LowRankFactors, lowrank_factors
from tests.artifactkit.test_loader import BITS_FOR, bit_identical, mixed_state_dict, run_loader


def record_pack_asym(a: torch.Tensor, b: torch.Tensor, group: int):
    """The public records' `_lqer_pack_asym`, written out from its definition."""
    a_scale = (a.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16)
    a_codes = torch.clamp(torch.round(a / a_scale.float()), -2, 1).to(torch.int8)
    flat = b.reshape(-1, group)
    b_scales = (flat.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / 7.5).to(torch.float16).reshape(-1)
    b_codes = torch.clamp(torch.round(flat / b_scales.float().reshape(-1, 1)), -8, 7).to(torch.int8).reshape(b.shape)
    return a_codes, a_scale, b_codes, b_scales


def test_factors_match_the_records_packing_and_reduce_the_error():
    generator = torch.Generator().manual_seed(0)
    # an error with a strong rank-2 part plus noise: the correction must remove most of it
    error = (torch.randn(96, 2, generator=generator) @ torch.randn(2, 128, generator=generator)
             + 0.01 * torch.randn(96, 128, generator=generator))
    factors = lowrank_factors(error, rank=4, group=64)
    left, singular, right = torch.linalg.svd(error, full_matrices=False)
    a_codes, a_scale, b_codes, b_scales = record_pack_asym(left[:, :4] * singular[:4], right[:4], 64)
    assert torch.equal(factors.a_codes, a_codes) and torch.equal(factors.b_codes, b_codes)
    assert torch.equal(factors.a_scale.reshape(()), a_scale) and torch.equal(factors.b_scales, b_scales)
    assert int(factors.a_codes.min()) >= -2 and int(factors.a_codes.max()) <= 1
    assert int(factors.b_codes.min()) >= -8 and int(factors.b_codes.max()) <= 7
    residual = (error - factors.correction()).norm() / error.norm()
    assert residual < 0.8  # int2 A is coarse, but the correction still removes a real share


def test_a_layout_that_does_not_fit_is_refused():
    with pytest.raises(InputError, match="do not fit"):
        lowrank_factors(torch.randn(8, 10), rank=4, group=64)  # 4 x 10 is no multiple of 64


def _with_lowrank(state: dict[str, torch.Tensor], names: tuple[str, ...]):
    """The test model quantized with every int width (small tensors forced to ints), and
    LQER factors on `names`."""
    model = quantize_state_dict(state, resolve_policy("int6-mixed", bits_for=BITS_FOR))
    expanded = expand_banks(state)[0]
    chosen = [entry for entry in model.entries if entry.name in names]
    assert len(chosen) == len(names) and all(entry.scheme.is_int for entry in chosen)
    for entry in chosen:
        weight = expanded[entry.name].float().reshape(entry.shape[0], -1)
        entry.lowrank = lowrank_factors(weight - entry.quantized.dequantize().reshape(entry.shape[0], -1), 4, 16)
    return model


LQER_NAMES = ("b.0.m.d", "b.0.m.u")  # a float64 matrix and a bfloat16 bank slice


@pytest.mark.parametrize("codec", ["ans", "lzma"])
def test_lowrank_round_trip_through_unpack_and_the_exported_loader(tmp_path, codec):
    state = mixed_state_dict()
    model = _with_lowrank(state, LQER_NAMES)
    packed = encode_artifact(model, codec)
    path = tmp_path / "lqer.akit"
    write_artifact(path, packed)
    assert struct.unpack_from("<8sH", packed.data)[1] == LOWRANK_FORMAT_VERSION
    reader = read_artifact(path)
    expanded = reader.expanded_state_dict()
    for entry in model.entries:
        if entry.name in LQER_NAMES:  # the stored value is codes*scale + A_hat @ B_hat, then the dtype cast
            expected = entry.restored().to(expanded[entry.name].dtype)
            assert bit_identical(expanded[entry.name], expected), entry.name
            without = entry.quantized.dequantize(expanded[entry.name].dtype)
            assert not torch.equal(expanded[entry.name], without)  # the correction was applied
    # re-encoding what the reader rebuilt gives the same bytes (factors survive exactly)
    assert encode_artifact(reader.quantized_model(), codec).data == packed.data

    out = tmp_path / "state.pt"
    assert CliRunner().invoke(main, ["unpack", str(path), "-o", str(out)]).exit_code == 0
    unpacked = torch.load(out, weights_only=True)
    loader = loader_for_artifact(reader.header)
    assert loader.lowrank and "lowrank" in loader.text
    loaded = run_loader(tmp_path, loader.text, [path])[str(path)]
    assert list(loaded) == list(unpacked)
    for name, tensor in unpacked.items():
        assert bit_identical(loaded[name], tensor), name


def test_a_loader_without_lowrank_support_refuses_version_2_clearly(tmp_path):
    path = tmp_path / "lqer.akit"
    write_artifact(path, encode_artifact(_with_lowrank(mixed_state_dict(), LQER_NAMES), "lzma"))
    namespace: dict = {}
    exec(compile(build_loader("lzma").text, "exported_loader", "exec"), namespace)
    with pytest.raises(ValueError, match="export with --artifact"):
        namespace["load_artifact"](str(path))


def test_artifacts_without_lowrank_stay_version_1(tmp_path):
    packed = encode_artifact(quantize_state_dict(mixed_state_dict()), "ans")
    assert struct.unpack_from("<8sH", packed.data)[1] == FORMAT_VERSION == 1
    assert [s["name"] for s in packed.header["sections"]] == ["codes", "scales", "half", "fp32", "raw"]
    assert "lowrank" not in build_loader(None).text  # the default loader pays nothing for LQER


def _rewrite_header(data: bytes, edit, version: int | None = None) -> bytes:
    magic, old_version, length = PREAMBLE.unpack_from(data)
    header = json.loads(zlib.decompress(data[PREAMBLE.size:PREAMBLE.size + length]))
    edit(header)
    block = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    return PREAMBLE.pack(magic, old_version if version is None else version, len(block)) + block + \
        data[PREAMBLE.size + length:]


def _first_lowrank(header):
    return next(t for t in header["tensors"] if "lowrank" in t)


@pytest.mark.parametrize("lie", ["rank too large", "group does not divide", "lowrank on fp16", "version 1"])
def test_lying_lowrank_headers_are_refused(lie):
    data = encode_artifact(_with_lowrank(mixed_state_dict(), LQER_NAMES), "lzma").data
    if lie == "rank too large":
        data = _rewrite_header(data, lambda h: _first_lowrank(h)["lowrank"].update(rank=10_000))
    elif lie == "group does not divide":
        data = _rewrite_header(data, lambda h: _first_lowrank(h)["lowrank"].update(group=7))
    elif lie == "lowrank on fp16":
        data = _rewrite_header(data, lambda h: next(t for t in h["tensors"] if t["scheme"] == "fp16")
                               .update(lowrank={"rank": 1, "group": 1}))
    else:
        data = _rewrite_header(data, lambda h: None, version=1)
    with pytest.raises(InputError):
        ArtifactReader(data, "lying.akit").expanded_state_dict()


def test_lowrank_factors_only_on_int_tensors():
    model = quantize_state_dict(mixed_state_dict())
    fp16 = next(entry for entry in model.entries if entry.scheme.label == "fp16" and len(entry.shape) == 2)
    fp16.lowrank = LowRankFactors(torch.zeros(fp16.shape[0], 1, dtype=torch.int8), torch.ones(1, dtype=torch.float16),
                                  torch.zeros(1, fp16.shape[1], dtype=torch.int8),
                                  torch.ones(fp16.shape[1], dtype=torch.float16), 1)
    with pytest.raises(InputError, match="int-quantized"):
        encode_artifact(model, "lzma")
