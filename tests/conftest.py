"""Shared test fixtures.

Most tests run anywhere: their text is the embedded corpus (Python's own documentation,
`train.corpus`, on every machine with Python) and their tokenizers are trained here with
the challenge's settings. Only tests that need exactly the shared test data (the public
tokenizer's specifics, the public records, tinyshakespeare) read `../shared`, through
the fixtures below, which skip with the reason when that folder is absent (a user's
clone). `SHARED` is the one place that names the folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sentencepiece
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
TOKENIZER_DOCUMENTS = 400  # of the embedded corpus: ~0.6 MB of text, a second to train on


def require_shared() -> Path:
    """Skip (with the reason) when ../shared is absent, as in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a user's clone); these tests need exactly the shared test data")
    return SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def shared_tokenizer() -> Path:
    """The public challenge tokenizer (sp1024, no byte fallback)."""
    require_shared()
    return SHARED_TOKENIZER


@pytest.fixture
def shakespeare_text() -> str:
    require_shared()
    return SHAKESPEARE.read_text(encoding="utf-8")


# ---------------------------------------------------------------- runs anywhere


@pytest.fixture(scope="session")
def corpus_documents() -> list:
    """The embedded corpus's documents (`train.corpus.Document`), in their fixed order."""
    from train.corpus import embedded_documents

    return embedded_documents()


@pytest.fixture(scope="session")
def corpus_text(corpus_documents) -> str:
    """The embedded corpus as one English text, documents separated by blank lines
    (about 1.1 MB; its exact content depends on the Python version, so tests derive
    expected numbers from it rather than hard-coding them)."""
    return "\n\n".join(document.text for document in corpus_documents)


@pytest.fixture(scope="session")
def corpus_tokenizer(tmp_path_factory, corpus_documents) -> Path:
    """A tokenizer file trained once per session on the embedded corpus with the
    challenge's settings (`train.data.train_tokenizer`: BPE 1024, byte fallback, split
    digits, nmt_nfkc, no dummy prefix)."""
    from train.data import train_tokenizer

    path = tmp_path_factory.mktemp("corpus_tokenizer") / "tokenizer.model"
    return train_tokenizer(corpus_documents[:TOKENIZER_DOCUMENTS], path)


@pytest.fixture(scope="session")
def no_fallback_tokenizer(corpus_text) -> sentencepiece.SentencePieceProcessor:
    """A tokenizer without byte fallback, like the public one: characters outside its
    coverage (every character of its training text; not CJK or emoji) become <unk>, which
    the byte rule counts as 0 bytes."""
    lines = [line for line in corpus_text[:400_000].splitlines() if line.strip()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=1024,
        byte_fallback=False, character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture
def one_torch_thread():
    """Tiny models: a second intra-op thread buys nothing, and on a busy 2-core machine its
    spin-waiting costs many times the CPU time. Restored after each test. Modules opt in
    with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
