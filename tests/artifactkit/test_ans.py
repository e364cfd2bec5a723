"""The rANS codes-section codec: exact round trips, the standalone decoder, corruption, size."""

from __future__ import annotations

import json
import lzma
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactkit.errors import InputError
from artifactkit.format import ans
from artifactkit.format.ans_decoder_src import DECODER_SOURCE


def levels(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def quantize_rows(weights: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization with the clip at the row's max |w| (independent of ans)."""
    scale = (np.abs(weights).max(axis=1) / levels(bits)).astype(np.float16)
    divisor = np.where(scale == 0, 1, scale).astype(np.float32)[:, None]
    codes = np.clip(np.rint(weights / divisor), -levels(bits), levels(bits)).astype(np.int8)
    return codes, scale


def heavy_tailed(rng: np.random.Generator, rows: int, cols: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    weights = rng.standard_t(4, size=(rows, cols)) * np.exp(rng.normal(0, 0.3, size=(rows, 1)))
    return quantize_rows(weights, bits)


def zero_order_entropy_bytes(codes: np.ndarray) -> float:
    counts = np.unique(codes, return_counts=True)[1].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum() / 8)


def round_trip(codes: list[np.ndarray], bits: list[int], contexts: bool) -> bytes:
    scales = [np.ones(matrix.shape[0], dtype=np.float16) for matrix in codes]
    blob = ans.encode_codes(codes, scales, bits, contexts=contexts)
    decoded = ans.decode_codes(blob, [matrix.shape for matrix in codes], scales, bits)
    assert len(decoded) == len(codes)
    for original, result in zip(codes, decoded, strict=True):
        assert result.dtype == np.int8 and result.shape == original.shape
        assert np.array_equal(result, original)
    return blob


def edge_case_tensors(bits: int) -> list[np.ndarray]:
    """All-zero, single-symbol, extreme outliers, empty, 1-element rows, and a dense tensor."""
    top = levels(bits)
    rng = np.random.default_rng(bits)
    outliers = np.zeros((9, 40), dtype=np.int8)
    outliers[3, 7], outliers[8, 39] = top, -top  # each a symbol with count 1
    return [
        np.zeros((5, 7), dtype=np.int8),
        np.full((3, 4), top, dtype=np.int8),
        outliers,
        np.zeros((0, 6), dtype=np.int8),
        np.zeros((4, 0), dtype=np.int8),
        rng.integers(-top, top + 1, size=(6, 1)).astype(np.int8),
        rng.integers(-top, top + 1, size=(1, 1)).astype(np.int8),
        heavy_tailed(rng, 33, 70, bits)[0],
    ]


@pytest.mark.parametrize("contexts", [True, False])
@pytest.mark.parametrize("bits", range(2, 9))
def test_edge_cases_round_trip_for_every_bit_width(bits: int, contexts: bool) -> None:
    round_trip(edge_case_tensors(bits), [bits] * 8, contexts)


@pytest.mark.parametrize("contexts", [True, False])
def test_mixed_bit_widths_and_full_alphabets_round_trip(contexts: bool) -> None:
    rng = np.random.default_rng(1)
    codes = [rng.integers(-levels(b), levels(b) + 1, size=(20, 30)).astype(np.int8) for b in range(2, 9)]
    codes += [heavy_tailed(rng, 64, 96, b)[0] for b in range(2, 9)]
    round_trip(codes, [*range(2, 9), *range(2, 9)], contexts)


def test_nothing_to_code_round_trips() -> None:
    round_trip([], [], True)
    round_trip([np.zeros((0, 0), dtype=np.int8), np.zeros((3, 0), dtype=np.int8)], [6, 8], True)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    tensors=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 40), st.integers(2, 8),
                               st.floats(0.01, 8.0)), min_size=1, max_size=5),
    contexts=st.booleans(),
)
def test_random_tensors_round_trip(seed: int, tensors: list[tuple[int, int, int, float]],
                                   contexts: bool) -> None:
    rng = np.random.default_rng(seed)
    codes, bits = [], []
    for rows, cols, width, spread in tensors:
        values = np.rint(rng.standard_t(3, size=(rows, cols)) * spread)
        codes.append(np.clip(values, -levels(width), levels(width)).astype(np.int8))
        bits.append(width)
    round_trip(codes, bits, contexts)


def test_encoding_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    codes = [heavy_tailed(rng, 96, 64, 6)[0], heavy_tailed(rng, 40, 64, 8)[0]]
    scales = [np.ones(len(matrix), dtype=np.float16) for matrix in codes]
    assert ans.encode_codes(codes, scales, [6, 8]) == ans.encode_codes(codes, scales, [6, 8])


def test_quantized_frequencies_keep_every_present_symbol() -> None:
    counts = np.array([10**9, 1, 0, 1, 5, 0, 10**6])
    freqs = ans.quantize_frequencies(counts, 12)
    assert freqs.sum() == 4096
    assert np.array_equal(freqs > 0, counts > 0)


@pytest.mark.parametrize("contexts", [True, False])
def test_size_within_one_percent_of_zero_order_entropy(contexts: bool) -> None:
    codes, scale = heavy_tailed(np.random.default_rng(7), 512, 512, 6)
    blob = ans.encode_codes([codes], [scale], [6], contexts=contexts)
    assert len(blob) <= 1.01 * zero_order_entropy_bytes(codes)
    assert len(blob) < 0.95 * len(zlib.compress(codes.tobytes(), 9))


def test_contexts_beat_one_table_per_tensor_on_rows_of_different_spread() -> None:
    rng = np.random.default_rng(8)
    codes = [heavy_tailed(rng, 256, 256, 6)[0] for _ in range(3)]
    scales = [np.ones(256, dtype=np.float16)] * 3
    with_contexts = ans.encode_codes(codes, scales, [6] * 3, contexts=True)
    per_tensor = ans.encode_codes(codes, scales, [6] * 3, contexts=False)
    assert len(with_contexts) < 0.995 * len(per_tensor)


STANDALONE_DRIVER = """
import json, sys
sys.modules["artifactkit"] = None  # any import of the project now fails
import numpy as np
namespace = {}
exec(open("decoder.py").read(), namespace)
spec = json.load(open("spec.json"))
shapes = [tuple(shape) for shape in spec["shapes"]]
decoded = namespace["decode_codes"](open("blob.bin", "rb").read(), shapes, spec["bits"])
np.savez("decoded.npz", *decoded)
"""


def test_standalone_decoder_source_decodes_in_a_separate_process(tmp_path) -> None:
    rng = np.random.default_rng(11)
    codes = [heavy_tailed(rng, 48, 64, 6)[0], heavy_tailed(rng, 32, 64, 8)[0], *edge_case_tensors(4)]
    bits = [6, 8] + [4] * 8
    scales = [np.ones(len(matrix), dtype=np.float16) for matrix in codes]
    (tmp_path / "blob.bin").write_bytes(ans.encode_codes(codes, scales, bits))
    (tmp_path / "decoder.py").write_text(DECODER_SOURCE, encoding="utf-8")
    (tmp_path / "driver.py").write_text(STANDALONE_DRIVER, encoding="utf-8")
    (tmp_path / "spec.json").write_text(json.dumps({"shapes": [m.shape for m in codes], "bits": bits}))
    subprocess.run([sys.executable, "-I", "driver.py"], cwd=tmp_path, check=True, timeout=120)
    with np.load(tmp_path / "decoded.npz") as decoded:
        for index, original in enumerate(codes):
            assert np.array_equal(decoded[f"arr_{index}"], original)
            assert decoded[f"arr_{index}"].dtype == np.int8


def test_decoder_source_imports_only_numpy_and_stdlib() -> None:
    imports = [line.strip() for line in DECODER_SOURCE.splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import lzma, struct, zlib", "import numpy as np"]


def corruption_sample() -> tuple[bytes, list[tuple[int, int]], list[np.ndarray], list[int]]:
    rng = np.random.default_rng(3)
    codes = [heavy_tailed(rng, 12, 40, 6)[0], heavy_tailed(rng, 6, 30, 8)[0], np.zeros((2, 3), np.int8)]
    scales = [np.ones(len(matrix), dtype=np.float16) for matrix in codes]
    bits = [6, 8, 3]
    return ans.encode_codes(codes, scales, bits), [m.shape for m in codes], scales, bits


def test_every_flipped_byte_is_rejected() -> None:
    blob, shapes, scales, bits = corruption_sample()
    assert len(blob) > 300
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0xFF
        with pytest.raises(InputError, match="codes section"):
            ans.decode_codes(bytes(damaged), shapes, scales, bits)


def test_truncated_or_extended_blobs_are_rejected() -> None:
    blob, shapes, scales, bits = corruption_sample()
    for length in [0, 1, 10, 23, 24, 30, len(blob) // 2, len(blob) - 2, len(blob) - 1]:
        with pytest.raises(InputError, match="codes section"):
            ans.decode_codes(blob[:length], shapes, scales, bits)
    with pytest.raises(InputError, match="blob length"):
        ans.decode_codes(blob + b"\0\0", shapes, scales, bits)


def test_flipped_bytes_in_a_large_blob_are_rejected() -> None:
    codes, scale = heavy_tailed(np.random.default_rng(4), 256, 256, 6)
    blob = ans.encode_codes([codes], [scale], [6])
    rng = np.random.default_rng(0)
    for position in [0, 5, 12, 20, 26, 40, *rng.integers(60, len(blob), size=12), len(blob) - 1]:
        damaged = bytearray(blob)
        damaged[position] ^= 1 + rng.integers(0, 255)
        with pytest.raises(InputError):
            ans.decode_codes(bytes(damaged), [(256, 256)], [scale], [6])


def test_wrong_shapes_or_bits_are_rejected() -> None:
    rng = np.random.default_rng(9)
    codes = [rng.integers(-3, 4, size=(2, 3)).astype(np.int8), rng.integers(-3, 4, size=(2, 5)).astype(np.int8)]
    scales = [np.ones(2, dtype=np.float16)] * 2
    blob = ans.encode_codes(codes, scales, [3, 3])
    with pytest.raises(InputError):  # same symbol count and rows, different split
        ans.decode_codes(blob, [(2, 5), (2, 3)], scales, [3, 3])
    with pytest.raises(InputError):
        ans.decode_codes(blob, [(2, 3), (2, 5)], scales, [4, 4])
    with pytest.raises(InputError):
        ans.decode_codes(blob, [(2, 3), (2, 6)], scales, [3, 3])


def test_bad_encoder_inputs_are_rejected() -> None:
    ones = [np.ones(2, dtype=np.float16)]
    with pytest.raises(InputError, match="exceeds"):
        ans.encode_codes([np.full((2, 2), 4, dtype=np.int8)], ones, [3])
    with pytest.raises(InputError, match="int8"):
        ans.encode_codes([np.zeros((2, 2), dtype=np.int16)], ones, [3])
    with pytest.raises(InputError, match="scale"):
        ans.encode_codes([np.zeros((2, 2), dtype=np.int8)], [np.ones(3, dtype=np.float16)], [3])
    with pytest.raises(InputError, match="bit width"):
        ans.encode_codes([np.zeros((2, 2), dtype=np.int8)], ones, [9])


def test_hostile_header_counts_are_rejected_before_any_allocation() -> None:
    blob, shapes, scales, bits = corruption_sample()
    magic, precision, id_width, tables, lanes, words, table_bytes, crc = ans.HEADER.unpack_from(blob)
    for fields in [(tables + 10**4, lanes, words), (tables, 2**32 - 1, words), (tables, lanes, 2**32 - 1),
                   (tables, 0, words)]:
        header = ans.HEADER.pack(magic, precision, id_width, fields[0], fields[1], fields[2], table_bytes, crc)
        with pytest.raises(InputError, match="header|blob length"):
            ans.decode_codes(header + blob[ans.HEADER.size:], shapes, scales, bits)


def test_decoding_rejects_mismatched_arguments() -> None:
    blob, shapes, scales, bits = corruption_sample()
    with pytest.raises(InputError, match="scale"):
        ans.decode_codes(blob, shapes, scales[:-1] + [np.ones(5, dtype=np.float16)], bits)
    with pytest.raises(InputError, match="tensors"):
        ans.decode_codes(blob, shapes[:-1], scales, bits)


def test_first_version_blobs_with_a_zlib_table_block_still_decode() -> None:
    """AKC1 (the first released layout) differs only in the table block's compressor."""
    rng = np.random.default_rng(21)
    codes = [heavy_tailed(rng, 40, 64, 6)[0], heavy_tailed(rng, 8, 32, 8)[0]]
    scales = [np.ones(len(matrix), dtype=np.float16) for matrix in codes]
    blob = ans.encode_codes(codes, scales, [6, 8])
    magic, precision, id_width, tables, lanes, words, table_bytes, crc = ans.HEADER.unpack_from(blob)
    assert magic == b"AKC2"
    start = ans.HEADER.size
    table_block = lzma.decompress(blob[start:start + table_bytes])
    old_tables = zlib.compress(table_block, 9)
    old = (ans.HEADER.pack(b"AKC1", precision, id_width, tables, lanes, words, len(old_tables), crc)
           + old_tables + blob[start + table_bytes:])
    decoded = ans.decode_codes(old, [m.shape for m in codes], scales, [6, 8])
    assert all(np.array_equal(a, b) for a, b in zip(decoded, codes, strict=True))
    with pytest.raises(InputError, match="codes section"):  # a zlib block under the new magic
        ans.decode_codes(b"AKC2" + old[4:], [m.shape for m in codes], scales, [6, 8])


def test_a_table_block_demanding_huge_lzma_memory_is_refused() -> None:
    blob, shapes, scales, bits = corruption_sample()
    magic, precision, id_width, tables, lanes, words, table_bytes, crc = ans.HEADER.unpack_from(blob)
    start = ans.HEADER.size
    hostile = bytearray(blob)
    hostile[start + 1:start + 5] = (2**32 - 1).to_bytes(4, "little")  # lzma-alone dictionary size
    with pytest.raises(InputError, match="codes section"):
        ans.decode_codes(bytes(hostile), shapes, scales, bits)


def test_empty_tensor_decodes_under_either_empty_shape() -> None:
    """A loader that computes cols = numel // rows gets (0, 0) for a (0, n) tensor."""
    codes = [np.zeros((0, 7), dtype=np.int8), np.ones((2, 3), dtype=np.int8)]
    scales = [np.ones(0, dtype=np.float16), np.ones(2, dtype=np.float16)]
    blob = ans.encode_codes(codes, scales, [4, 4])
    decoded = ans.decode_codes(blob, [(0, 0), (2, 3)], scales, [4, 4])
    assert decoded[0].size == 0 and np.array_equal(decoded[1], codes[1])


def test_a_codes_blob_from_a_newer_version_says_so() -> None:
    blob, shapes, scales, bits = corruption_sample()
    with pytest.raises(InputError, match="unknown version b'AKC9'; export the loader"):
        ans.decode_codes(b"AKC9" + blob[4:], shapes, scales, bits)
