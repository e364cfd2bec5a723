"""`artifactkit audit-tokenizer` on real tokenizers and real text: counts, the unknown
fraction of validation targets, the byte check passing and failing, clean errors. The
tokenizers are trained here on the embedded corpus; only the public tokenizer's own
counts need ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
from click.testing import CliRunner

from artifactkit.cli import main
from eval.shards import write_shard

MULTILINGUAL = "Café naïve — 日本語のテキスト, 中文 and emoji 😀🎉!\n\nPlain words after it, to be sure.\n"


def audit(*args: str):
    return CliRunner().invoke(main, ["audit-tokenizer", *args])


def train(tmp_path: Path, text: str, name: str, **options) -> Path:
    lines = [line for line in text[:150_000].splitlines() if line.strip()]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(tmp_path / name), model_type="bpe", vocab_size=1024,
        hard_vocab_limit=False, minloglevel=2, **options,
    )
    return tmp_path / f"{name}.model"


def test_shared_tokenizer_counts_and_byte_check_on_real_text(shared_tokenizer, shared_dir):
    text_file = shared_dir / "data" / "tinyshakespeare.txt"
    result = audit(str(shared_tokenizer), "--text", str(text_file), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vocab"] == {
        "vocab_size": 1024, "byte_fallback_pieces": 0, "control_pieces": 3, "unknown_pieces": 1,
        "unused_pieces": 0, "leading_space_pieces": report["vocab"]["leading_space_pieces"],
        "has_standalone_space": True, "standalone_space_id": 940,
    }
    sp = sentencepiece.SentencePieceProcessor(model_file=str(shared_tokenizer))
    assert report["vocab"]["leading_space_pieces"] == sum(
        sp.id_to_piece(i).startswith("\u2581") for i in range(1024) if not sp.is_control(i) and not sp.is_unknown(i)
    )
    (check,) = report["byte_checks"]
    assert check["passed"] and check["mismatched_documents"] == 0
    paragraphs = [p for p in text_file.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    assert check["documents"] == len(paragraphs)
    assert check["table_bytes"] == check["decoded_bytes"] == sum(len(sp.decode(sp.encode(p)).encode()) for p in paragraphs)


def test_unknown_fraction_of_validation_targets(tmp_path, corpus_text):
    # No byte fallback, like the public tokenizer: CJK and emoji become <unk>.
    model = train(tmp_path, corpus_text, "no_fallback", byte_fallback=False, character_coverage=1.0,
                  pad_id=0, bos_id=1, eos_id=2, unk_id=3)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    ids: list[int] = []
    for paragraph in [*corpus_text[:5_000].split("\n\n"), *MULTILINGUAL.split("\n\n")]:
        if paragraph.strip():
            ids += [1, *sp.encode(paragraph)]
    write_shard(tmp_path / "val_000000.bin", np.asarray(ids))
    result = audit(str(model), "--val", str(tmp_path / "val_*.bin"), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    unknown = sum(1 for token in ids[1:] if token == sp.unk_id())
    assert unknown > 3
    assert report["val"]["unknown_targets"] == unknown
    assert report["val"]["unknown_fraction"] == pytest.approx(unknown / (len(ids) - 1))
    assert report["val"]["documents"] == ids.count(1)
    (check,) = report["byte_checks"]
    assert check["passed"] and check["documents_with_unknown"] == 1
    assert "count 0 bytes under the official rule" in result.stderr


def test_byte_fallback_tokenizer_passes_on_multilingual_text(tmp_path, corpus_text):
    model = train(tmp_path, corpus_text, "fallback", byte_fallback=True, split_digits=True,
                  normalization_rule_name="nmt_nfkc", add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3)
    (tmp_path / "multi.txt").write_text(MULTILINGUAL, encoding="utf-8")
    result = audit(str(model), "--text", str(tmp_path / "multi.txt"), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vocab"]["byte_fallback_pieces"] == 256 and report["vocab"]["control_pieces"] == 3
    (check,) = report["byte_checks"]
    assert check["passed"] and check["checked_documents"] == 2
    assert check["table_bytes"] == len(MULTILINGUAL.replace("\n\n", "").replace("\n", "").encode("utf-8"))


def test_suffix_whitespace_tokenizer_fails_the_byte_check(tmp_path, corpus_text):
    """Pieces like `to▁` carry their space at the end, which the official rule counts as
    3 bytes: the audit must catch it and exit 1."""
    model = train(tmp_path, corpus_text, "suffix", byte_fallback=True, treat_whitespace_as_suffix=True)
    (tmp_path / "t.txt").write_text(corpus_text[:3_000], encoding="utf-8")
    result = audit(str(model), "--text", str(tmp_path / "t.txt"))
    assert result.exit_code == 1
    assert "MISMATCH" in result.stdout and "first: table" in result.stdout
    assert result.stderr.startswith(f"error: {model}: the byte table disagrees with the decoded text")


def test_bad_inputs_are_clean_errors(tmp_path, corpus_tokenizer):
    fake = tmp_path / "fake.model"
    fake.write_bytes(b"\x00\x01 definitely not a sentencepiece model")
    result = audit(str(fake))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {fake}: not a SentencePiece model")
    shard = tmp_path / "val_000000.bin"
    shard.write_bytes(b"\x00" * 500)
    result = audit(str(corpus_tokenizer), "--val", str(shard))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {shard}: file is 500 bytes, shorter than the 1,024-byte shard header; " \
        "the file is truncated or not a token shard"
    assert "Traceback" not in result.output
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    result = audit(str(corpus_tokenizer), "--text", str(latin))
    assert result.exit_code == 2 and "not UTF-8 text" in result.stderr


def test_without_text_or_val_the_check_is_reported_skipped(corpus_tokenizer):
    space = sentencepiece.SentencePieceProcessor(model_file=str(corpus_tokenizer)).piece_to_id("\u2581")
    result = audit(str(corpus_tokenizer))
    assert result.exit_code == 0
    assert "byte check  skipped" in result.stdout and f"standalone space piece: yes (id {space})" in result.stdout
