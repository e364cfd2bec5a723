"""Fixtures for eval tests: the tiny model module, a tokenizer trained with the official
settings (byte fallback) on the embedded corpus, a multilingual snippet, and the public
tokenizer (only for tests of its specifics; skipped without ../shared)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest
import sentencepiece

HERE = Path(__file__).resolve().parent

# Accents, CJK, emoji, a digit run and punctuation outside ASCII.
MULTILINGUAL = (
    "Café naïve façade — Ünïcödé déjà vu.\n"
    "日本語のテキストと中文的句子。\n"
    "Emoji 😀🎉 and flags 🇫🇷, price 1234.56 €, Ελληνικά και русский текст.\n"
)


@pytest.fixture(autouse=True)
def _one_torch_thread_everywhere(one_torch_thread):
    """Every eval test runs on one intra-op thread (tests/conftest.py says why)."""
    yield


def load_tiny_lm() -> ModuleType:
    """Import tests/eval/tiny_lm.py (tests are not packages under importlib mode)."""
    if "tiny_lm" in sys.modules:
        return sys.modules["tiny_lm"]
    spec = importlib.util.spec_from_file_location("tiny_lm", HERE / "tiny_lm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_lm"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_lm() -> ModuleType:
    return load_tiny_lm()


@pytest.fixture(scope="session")
def multilingual_text() -> str:
    return MULTILINGUAL


@pytest.fixture(scope="session")
def fallback_tokenizer(corpus_text) -> sentencepiece.SentencePieceProcessor:
    """A tokenizer trained once per session with the challenge's settings (BPE, vocab
    1024, byte fallback, split digits, nmt_nfkc, no dummy prefix) on a slice of the
    embedded corpus."""
    text = corpus_text[:200_000]
    lines = [line for line in text.splitlines() if line.strip()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=1024,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture(scope="session")
def shared_sp(shared_tokenizer) -> sentencepiece.SentencePieceProcessor:
    """The public tokenizer: only for what needs exactly it (skips without ../shared)."""
    return sentencepiece.SentencePieceProcessor(model_file=str(shared_tokenizer))
