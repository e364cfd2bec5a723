"""Shard I/O: round trip on real tokens, and clean errors naming the file for bad
headers, truncation, wrong magic or version, and empty globs."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece

from eval.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardError,
    load_tokens,
    read_header,
    read_shard,
    resolve_shards,
    write_shard,
)


def header_words(path) -> np.ndarray:
    return np.frombuffer(path.read_bytes()[:HEADER_BYTES], dtype="<i4").copy()


def rewrite_header(path, index: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    words = np.frombuffer(bytes(raw[:HEADER_BYTES]), dtype="<i4").copy()
    words[index] = value
    raw[:HEADER_BYTES] = words.tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture
def real_tokens(corpus_tokenizer, corpus_text) -> np.ndarray:
    sp = sentencepiece.SentencePieceProcessor(model_file=str(corpus_tokenizer))
    return np.asarray([1, *sp.encode(corpus_text[:20_000])], dtype=np.uint16)


def test_round_trip_of_real_tokens_is_exact_and_memory_mapped(tmp_path, real_tokens):
    path = write_shard(tmp_path / "val_000000.bin", real_tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * real_tokens.size
    words = header_words(path)
    assert (int(words[0]), int(words[1]), int(words[2])) == (SHARD_MAGIC, 1, real_tokens.size)
    assert read_header(path) == real_tokens.size
    loaded = read_shard(path)
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, real_tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["val_000000.bin"], "no temp file left behind"


def test_glob_loads_shards_in_sorted_order(tmp_path, real_tokens):
    pieces = np.array_split(real_tokens, 3)
    # Written out of order: the glob must sort by path, not by creation time.
    for index in (2, 0, 1):
        write_shard(tmp_path / f"val_{index:06d}.bin", pieces[index])
    assert [p.name for p in resolve_shards(tmp_path / "val_*.bin")] == [
        "val_000000.bin", "val_000001.bin", "val_000002.bin"
    ]
    np.testing.assert_array_equal(load_tokens(tmp_path / "val_*.bin"), real_tokens)


def test_empty_shard_round_trips(tmp_path):
    path = write_shard(tmp_path / "empty.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(path).size == 0


def test_wrong_magic_names_the_file(tmp_path, real_tokens):
    path = write_shard(tmp_path / "bad.bin", real_tokens)
    rewrite_header(path, 0, 12345)
    with pytest.raises(ShardError, match=rf"^{path}: bad magic 12345 \(expected 20240520\); not a FineWeb"):
        read_shard(path)


def test_wrong_version_names_the_file(tmp_path, real_tokens):
    path = write_shard(tmp_path / "v7.bin", real_tokens)
    rewrite_header(path, 1, 7)
    with pytest.raises(ShardError, match=rf"^{path}: unsupported shard version 7 \(expected 1\)"):
        read_shard(path)


def test_truncated_payload_is_detected(tmp_path, real_tokens):
    path = write_shard(tmp_path / "cut.bin", real_tokens)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ShardError, match=rf"^{path}: header says {real_tokens.size:,} tokens .* truncated or corrupt"):
        read_shard(path)


def test_count_larger_than_file_and_negative_count(tmp_path, real_tokens):
    path = write_shard(tmp_path / "count.bin", real_tokens)
    rewrite_header(path, 2, real_tokens.size + 1)
    with pytest.raises(ShardError, match="truncated or corrupt"):
        read_header(path)
    rewrite_header(path, 2, -5)
    with pytest.raises(ShardError, match="header says -5 tokens"):
        read_header(path)


def test_file_shorter_than_header(tmp_path):
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ShardError, match=rf"^{path}: file is 100 bytes, shorter than the 1,024-byte shard header"):
        read_shard(path)


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(ShardError, match="cannot read shard"):
        read_shard(tmp_path / "absent.bin")
    with pytest.raises(ShardError, match="no shard files match"):
        load_tokens(tmp_path / "nothing_*.bin")


def test_writer_rejects_ids_outside_uint16_and_2d_arrays(tmp_path):
    with pytest.raises(ShardError, match=r"must lie in \[0, 65535\]"):
        write_shard(tmp_path / "big.bin", np.array([1, 70000]))
    with pytest.raises(ShardError, match="must be 1-D"):
        write_shard(tmp_path / "flat.bin", np.zeros((2, 2), dtype=np.int64))
    assert not list(tmp_path.iterdir())


def test_one_bad_shard_in_a_glob_is_named(tmp_path, real_tokens):
    write_shard(tmp_path / "val_000000.bin", real_tokens)
    bad = write_shard(tmp_path / "val_000001.bin", real_tokens)
    rewrite_header(bad, 0, 1)
    with pytest.raises(ShardError, match=rf"^{bad}: bad magic"):
        load_tokens(tmp_path / "val_*.bin")


def test_regression_shards_are_sorted_as_strings_like_the_official_loader(tmp_path):
    """Bug: paths were sorted as Path objects, which compare part by part: `a/` before
    `a-b/`. The official loader sorts the strings (`sorted(glob.glob(pattern))`), where
    '-' (0x2d) sorts before '/' (0x2f): `a-b/` first. The order of the tokens follows."""
    import glob

    for folder, value in (("a", 1), ("a-b", 2)):
        (tmp_path / folder).mkdir()
        write_shard(tmp_path / folder / "val_000000.bin", np.full(3, value, dtype=np.uint16))
    pattern = str(tmp_path / "a*" / "val_*.bin")
    official = sorted(glob.glob(pattern))
    assert [str(path) for path in resolve_shards(pattern)] == official
    assert official[0].endswith("a-b/val_000000.bin")  # the case where Path order differs
    assert load_tokens(pattern).tolist() == [2, 2, 2, 1, 1, 1]
