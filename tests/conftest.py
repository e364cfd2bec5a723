"""Shared test fixtures: where ../shared lives, and a skip that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"


def require_shared() -> Path:
    """Skip (with the reason) when ../shared is absent, as in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a user's clone); these tests need the shared test data")
    return SHARED


@pytest.fixture
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture
def shared_tokenizer() -> Path:
    require_shared()
    return SHARED_TOKENIZER


@pytest.fixture
def shakespeare_text() -> str:
    require_shared()
    return SHAKESPEARE.read_text(encoding="utf-8")
