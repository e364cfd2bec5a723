"""eval.tokenizer_audit pieces the CLI tests do not pin down alone."""

from __future__ import annotations

import numpy as np

from eval.bpb import build_byte_tables
from eval.tokenizer_audit import check_byte_table, split_documents, summarize_val, summarize_vocab


def test_split_documents_drops_bos_and_a_document_cut_by_the_limit():
    stream = np.array([1, 10, 11, 1, 12, 1, 13, 14, 15])
    assert split_documents(stream, limit=100) == [[10, 11], [12], [13, 14, 15]]
    assert split_documents(stream, limit=6) == [[10, 11], [12]]  # [13, 14, 15] is cut: left out


def test_vocab_and_val_summaries_count_what_the_tokenizer_defines(fallback_tokenizer, multilingual_text):
    tables = build_byte_tables(fallback_tokenizer)
    vocab = summarize_vocab(fallback_tokenizer, tables)
    assert (vocab.vocab_size, vocab.byte_fallback_pieces, vocab.control_pieces, vocab.unknown_pieces) == (1024, 256, 3, 1)
    assert vocab.has_standalone_space and fallback_tokenizer.id_to_piece(vocab.standalone_space_id) == "\u2581"
    ids = [1, *fallback_tokenizer.encode(multilingual_text), 3, 5000]
    summary = summarize_val(tables, np.asarray(ids))
    assert summary.unknown_targets == 1 and summary.out_of_vocab_targets == 1
    assert summary.byte_fallback_targets == sum(fallback_tokenizer.is_byte(i) for i in ids[1:-1])
    assert summary.bytes == 0, "byte totals are not given for streams holding ids outside the tables"


def test_byte_check_skips_documents_with_unknown_ids(no_fallback_tokenizer, multilingual_text):
    sp = no_fallback_tokenizer
    tables = build_byte_tables(sp)
    english = "The for statement is used to iterate over the elements of a sequence (such as a string)."
    documents = [sp.encode(english), sp.encode(multilingual_text)]
    assert sp.unk_id() not in documents[0] and sp.unk_id() in documents[1]
    check = check_byte_table(sp, tables, documents, "sample")
    assert (check.documents, check.checked_documents, check.documents_with_unknown) == (2, 1, 1)
    assert check.passed and check.table_bytes == len(sp.decode(documents[0]).encode("utf-8"))
