"""Data preparation and the training token stream.

* `train_tokenizer`: a SentencePiece BPE with the challenge's settings (vocab 1024,
  byte_fallback, split_digits, nmt_nfkc, no dummy prefix, pad 0 / bos 1 / eos 2 / unk 3).
* `write_document_shards`: documents -> FineWeb-format shards, BOS before each document.
* `prepare_text_files` / `prepare_embedded_corpus`: the two preparation paths, each
  writing `tokenizer.model`, `data/train_*.bin`, `data/val_*.bin` into one directory.
* `TokenStream`: deterministic, resumable reading of training shards (real FineWeb
  sp1024 shards are read unchanged; the shard format itself lives in `eval.shards`).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece

from eval.atomic import atomic_write_bytes
from eval.shards import BOS_ID, resolve_shards, write_shard
from train.corpus import Document, corpus_fingerprint, embedded_documents, split_documents

TOKENIZER_SETTINGS: dict[str, object] = {
    "model_type": "bpe",
    "vocab_size": 1024,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "character_coverage": 0.999,
    "hard_vocab_limit": False,
}
DEFAULT_SHARD_TOKENS = 100_000_000  # FineWeb's shard size


class DataError(ValueError):
    """Input data cannot be prepared or read; the message names the path, cause and fix."""


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared dataset lives (the fields of run.json's `data` entry)."""

    tokenizer: Path
    train_glob: str
    val_glob: str
    train_tokens: int
    val_tokens: int
    fingerprint: str

    def to_dict(self) -> dict:
        return {"tokenizer": str(self.tokenizer), "train_glob": self.train_glob, "val_glob": self.val_glob,
                "train_tokens": self.train_tokens, "val_tokens": self.val_tokens, "fingerprint": self.fingerprint}


def _sentences(documents: Iterable[Document]) -> Iterable[str]:
    for document in documents:
        for line in document.text.splitlines():
            if line.strip():
                yield line


def train_tokenizer(documents: Sequence[Document], output: str | os.PathLike, vocab_size: int = 1024) -> Path:
    """Train a SentencePiece BPE tokenizer with the challenge's settings on the lines
    of `documents`; write the model atomically to `output` (a `.model` path)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(TOKENIZER_SETTINGS, vocab_size=vocab_size)
    # model_writer instead of model_prefix: no path is embedded in the model, so the
    # same documents give a byte-identical tokenizer (and the same tokenizer_sha256).
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences(documents)),
        model_writer=buffer,
        num_threads=1,  # one thread keeps the merges reproducible
        minloglevel=2,
        **settings,
    )
    atomic_write_bytes(output, buffer.getvalue())
    return output


def load_tokenizer(path: str | os.PathLike) -> sentencepiece.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tokenizer model not found; pass --tokenizer with a SentencePiece .model file")
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{path}: not a SentencePiece model ({exc}); pass a .model file") from exc
    return processor


def encode_documents(tokenizer: sentencepiece.SentencePieceProcessor, documents: Sequence[Document]) -> np.ndarray:
    """Token stream of `documents`: BOS, then the document's ids, for each document."""
    if tokenizer.get_piece_size() > 2**16:
        raise DataError("tokenizer: vocabulary above 65536 does not fit uint16 shards; use a smaller vocabulary")
    encoded = tokenizer.encode([document.text for document in documents])
    pieces = []
    for ids in encoded:
        pieces.append(np.array([BOS_ID, *ids], dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def write_document_shards(tokens: np.ndarray, directory: str | os.PathLike, split: str,
                          shard_tokens: int = DEFAULT_SHARD_TOKENS) -> list[Path]:
    """Write `tokens` as `directory/{split}_000000.bin`, ... (each at most
    `shard_tokens` tokens), replacing older shards of that split."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{split}_*.bin"):
        stale.unlink()
    paths = []
    for index, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
        paths.append(write_shard(directory / f"{split}_{index:06d}.bin", tokens[start:start + shard_tokens]))
    return paths


def _prepare(documents: list[Document], out_dir: Path, tokenizer: str | os.PathLike | None,
             val_fraction: float, shard_tokens: int) -> PreparedData:
    train_docs, val_docs = split_documents(documents, val_fraction)
    if not train_docs or not val_docs:
        raise DataError(f"{out_dir}: the split gave {len(train_docs)} train and {len(val_docs)} validation "
                        "documents; give more documents or change --val-fraction")
    tokenizer_path = out_dir / "tokenizer.model"
    if tokenizer is None:
        train_tokenizer(train_docs, tokenizer_path)
    elif Path(tokenizer).resolve() != tokenizer_path.resolve():
        load_tokenizer(tokenizer)  # validate before copying
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tokenizer, tokenizer_path)
    processor = load_tokenizer(tokenizer_path)
    train_tokens = encode_documents(processor, train_docs)
    val_tokens = encode_documents(processor, val_docs)
    write_document_shards(train_tokens, out_dir / "data", "train", shard_tokens)
    write_document_shards(val_tokens, out_dir / "data", "val", shard_tokens)
    return PreparedData(tokenizer=tokenizer_path, train_glob=str(out_dir / "data" / "train_*.bin"),
                        val_glob=str(out_dir / "data" / "val_*.bin"), train_tokens=int(len(train_tokens)),
                        val_tokens=int(len(val_tokens)), fingerprint=corpus_fingerprint(documents))


def prepare_embedded_corpus(out_dir: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                            val_fraction: float = 0.1, shard_tokens: int = DEFAULT_SHARD_TOKENS) -> PreparedData:
    """Tokenizer (trained on the train split unless given) + shards of the embedded corpus."""
    return _prepare(embedded_documents(), Path(out_dir), tokenizer, val_fraction, shard_tokens)


def read_text_documents(paths: Sequence[str | os.PathLike], unit: str = "file") -> list[Document]:
    """Documents from UTF-8 text files: one per file (`unit="file"`) or one per
    blank-line-separated paragraph (`unit="paragraph"`)."""
    documents = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read as UTF-8 text ({exc}); pass plain UTF-8 text files") from exc
        if unit == "file":
            parts = [text]
        elif unit == "paragraph":
            parts = [part.strip("\n") for part in text.split("\n\n")]
        else:
            raise DataError(f"{path}: unknown document unit {unit!r}; use 'file' or 'paragraph'")
        documents.extend(Document(f"{path}:{i}", part) for i, part in enumerate(parts) if part.strip())
    return documents


def prepare_text_files(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                       tokenizer: str | os.PathLike | None = None, unit: str = "file",
                       val_fraction: float = 0.1, shard_tokens: int = DEFAULT_SHARD_TOKENS) -> PreparedData:
    """Shards (and, unless `tokenizer` is given, a trained tokenizer) from text files."""
    return _prepare(read_text_documents(paths, unit), Path(out_dir), tokenizer, val_fraction, shard_tokens)


class TokenStream:
    """Reads consecutive tokens from sorted shards, wrapping around at the end.

    The position (`shard_index`, `offset`) is plain ints so it can be saved in the
    training state and restored for `--resume`. Shards are memory-mapped one at a time.
    """

    def __init__(self, pattern: str) -> None:
        self.paths = resolve_shards(pattern)
        self.shard_index = 0
        self.offset = 0
        self._tokens: np.ndarray | None = None

    def _current(self) -> np.ndarray:
        if self._tokens is None:
            from eval.shards import read_shard

            self._tokens = read_shard(self.paths[self.shard_index])
        return self._tokens

    def take(self, count: int) -> np.ndarray:
        """The next `count` tokens (crossing shard boundaries) as int64."""
        out = np.empty(count, dtype=np.int64)
        filled = 0
        empty_in_a_row = 0
        while filled < count:
            tokens = self._current()
            available = len(tokens) - self.offset
            if available <= 0:
                empty_in_a_row += 1
                if empty_in_a_row > len(self.paths):
                    raise DataError(f"{self.paths[0].parent}: every training shard is empty; re-create the shards")
                self.shard_index = (self.shard_index + 1) % len(self.paths)
                self.offset = 0
                self._tokens = None
                continue
            empty_in_a_row = 0
            chunk = min(available, count - filled)
            out[filled:filled + chunk] = tokens[self.offset:self.offset + chunk]
            filled += chunk
            self.offset += chunk
        return out

    def state(self) -> dict[str, int]:
        return {"shard_index": self.shard_index, "offset": self.offset}

    def restore(self, state: dict[str, int]) -> None:
        self.shard_index = int(state["shard_index"]) % len(self.paths)
        self.offset = int(state["offset"])
        self._tokens = None
