"""Data preparation: the official tokenizer settings, BOS-per-document shards, the
embedded corpus and the resumable token stream."""

from __future__ import annotations

import numpy as np
import pytest

from eval.runtime import file_sha256
from eval.shards import BOS_ID, read_shard, write_shard
from train.corpus import Document, embedded_documents, split_documents
from train.data import (
    TokenStream,
    encode_documents,
    load_tokenizer,
    prepare_text_files,
    train_tokenizer,
)


def test_tokenizer_trained_with_the_official_settings(prepared):
    tokenizer = load_tokenizer(prepared.tokenizer)
    assert tokenizer.get_piece_size() == 1024
    assert (tokenizer.pad_id(), tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.unk_id()) == (0, 1, 2, 3)
    byte_ids = [i for i in range(1024) if tokenizer.is_byte(i)]
    assert len(byte_ids) == 256
    assert tokenizer.id_to_piece(byte_ids[0]) == "<0x00>"
    # a character the corpus never contains falls back to its UTF-8 bytes, never <unk>
    snowman = tokenizer.encode("\u2603")
    assert tokenizer.unk_id() not in snowman
    assert [tokenizer.id_to_piece(i) for i in snowman if tokenizer.is_byte(i)] == ["<0xE2>", "<0x98>", "<0x83>"]
    # split_digits: every digit is its own piece
    digits = [p for p in tokenizer.encode("x 2048", out_type=str) if any(c.isdigit() for c in p)]
    assert all(len(p.strip("\u2581")) == 1 for p in digits)
    # no dummy prefix: a document's first word gets no leading "▁"
    assert not tokenizer.encode("the", out_type=str)[0].startswith("\u2581")
    # nmt_nfkc normalisation: the "ﬁ" ligature becomes "fi"
    assert tokenizer.decode(tokenizer.encode("\ufb01le")) == "file"


def test_tokenizer_training_is_reproducible(tmp_path):
    documents = embedded_documents()[:300]
    a = train_tokenizer(documents, tmp_path / "a" / "t.model")
    b = train_tokenizer(documents, tmp_path / "longer_directory_name" / "t.model")
    assert file_sha256(a) == file_sha256(b)


def test_shards_put_bos_before_every_document(prepared):
    tokenizer = load_tokenizer(prepared.tokenizer)
    documents = [Document("a", "First document."), Document("b", "Second one, longer.")]
    tokens = encode_documents(tokenizer, documents)
    assert tokens.dtype == np.uint16
    assert tokens[0] == BOS_ID and int((tokens == BOS_ID).sum()) == 2
    second = int(np.flatnonzero(tokens == BOS_ID)[1])
    assert tokenizer.decode(tokens[1:second].tolist()) == "First document."
    train = read_shard(prepared.train_glob.replace("*", "000000"))
    val = read_shard(prepared.val_glob.replace("*", "000000"))
    assert train[0] == BOS_ID and val[0] == BOS_ID
    assert len(train) == prepared.train_tokens and len(val) == prepared.val_tokens
    assert int((val == BOS_ID).sum()) >= 10  # many validation documents, each with its BOS


def test_embedded_corpus_is_real_text_with_a_deterministic_document_split():
    documents = embedded_documents()
    assert sum(len(d.text) for d in documents) > 500_000
    assert documents == embedded_documents()
    train, val = split_documents(documents, 0.1)
    assert 0.03 < len(val) / len(documents) < 0.2
    assert not {d.digest for d in train} & {d.digest for d in val}
    assert split_documents(documents, 0.1) == (train, val)
    text = " ".join(d.text for d in documents[:200]).lower()
    assert text.count(" the ") > 500  # English prose, not code or generated tokens


def test_prepare_text_files_from_shakespeare(tmp_path, shakespeare_text, shared_tokenizer):
    source = tmp_path / "plays.txt"
    source.write_text(shakespeare_text[:200_000], encoding="utf-8")
    prepared = prepare_text_files([source], tmp_path / "out", tokenizer=shared_tokenizer, unit="paragraph",
                                  shard_tokens=10_000)
    assert file_sha256(prepared.tokenizer) == file_sha256(shared_tokenizer)
    train_paths = sorted((tmp_path / "out" / "data").glob("train_*.bin"))
    assert len(train_paths) > 2  # split into 10k-token shards
    assert all(len(read_shard(p)) <= 10_000 for p in train_paths)
    assert prepared.val_tokens > 0


def test_token_stream_crosses_shards_wraps_and_restores(tmp_path):
    write_shard(tmp_path / "train_000000.bin", np.arange(0, 5))
    write_shard(tmp_path / "train_000001.bin", np.arange(5, 8))
    stream = TokenStream(str(tmp_path / "train_*.bin"))
    assert stream.take(4).tolist() == [0, 1, 2, 3]
    saved = stream.state()
    assert stream.take(6).tolist() == [4, 5, 6, 7, 0, 1]
    stream.restore(saved)
    assert stream.take(6).tolist() == [4, 5, 6, 7, 0, 1]


def test_unreadable_text_file_is_a_clear_error(tmp_path):
    from train.data import DataError

    bad = tmp_path / "binary.txt"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="binary.txt: cannot read as UTF-8"):
        prepare_text_files([bad], tmp_path / "out")
