"""Fixtures for the train tests: the embedded corpus, prepared once per session."""

from __future__ import annotations

import pytest

from train.data import PreparedData, prepare_embedded_corpus


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """Tokenizer + train/val shards of the embedded corpus (about a second)."""
    return prepare_embedded_corpus(tmp_path_factory.mktemp("corpus"))
