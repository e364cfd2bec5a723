"""Calibration sources: real shard files written with eval.shards, and sampling from a
model whose next-token distribution we know."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from artifactkit.errors import InputError
from artifactkit.quantize.calibration import self_generated, tokens_from_shards
from eval.shards import write_shard


def write_train_shards(directory, sizes=(1000, 700)):
    """Shards whose token at global position p is p % 60000, so any window tells where
    it came from."""
    offset = 0
    for index, size in enumerate(sizes):
        write_shard(directory / f"fineweb_train_{index:06d}.bin", (np.arange(offset, offset + size) % 60000))
        offset += size


def test_windows_are_aligned_distinct_and_seeded(tmp_path):
    write_train_shards(tmp_path)
    pattern = str(tmp_path / "fineweb_train_*.bin")
    tokens = tokens_from_shards(pattern, num_seqs=20, seq_len=50, seed=3)
    assert tokens.shape == (20, 50) and tokens.dtype == torch.long
    starts = tokens[:, 0].tolist()
    assert len(set(starts)) == 20
    for row, start in zip(tokens, starts, strict=True):
        assert torch.equal(row, torch.arange(start, start + 50))  # contiguous, from one shard
        local = start if start < 1000 else start - 1000
        assert local % 50 == 0 and local + 50 <= (1000 if start < 1000 else 700)
    assert {start < 1000 for start in starts} == {True, False}  # both shards used
    assert torch.equal(tokens, tokens_from_shards(pattern, 20, 50, seed=3))
    assert not torch.equal(tokens, tokens_from_shards(pattern, 20, 50, seed=4))


@pytest.mark.parametrize("name", ["fineweb_val_000000.bin", "val_000.bin", "FineWeb_VAL_1.bin"])
def test_validation_shards_are_refused(tmp_path, name):
    write_train_shards(tmp_path)
    write_shard(tmp_path / name, np.arange(500))
    with pytest.raises(InputError) as caught:
        tokens_from_shards(str(tmp_path / "*.bin"), 2, 10, seed=0)
    message = str(caught.value)
    assert name in message
    assert "not allowed by the challenge rules" in message
    assert "--calib self" in message


def test_too_few_tokens_and_missing_or_corrupt_shards_raise_input_error(tmp_path):
    write_train_shards(tmp_path, sizes=(100,))
    with pytest.raises(InputError, match="only 2 windows"):
        tokens_from_shards(str(tmp_path / "*.bin"), 3, 50, seed=0)
    with pytest.raises(InputError, match="no shard files match"):
        tokens_from_shards(str(tmp_path / "nothing_*.bin"), 1, 10, seed=0)
    corrupt = tmp_path / "fineweb_train_000009.bin"
    corrupt.write_bytes(b"not a shard")
    with pytest.raises(InputError, match="fineweb_train_000009.bin"):
        tokens_from_shards(str(tmp_path / "*.bin"), 1, 10, seed=0)


class Counter(nn.Module):
    """Puts almost all probability on (previous token + 1) % vocab, a little elsewhere."""

    def __init__(self, vocab: int = 11, sharpness: float = 20.0) -> None:
        super().__init__()
        self.vocab = vocab
        self.sharpness = sharpness
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        target = (ids + 1) % self.vocab
        return torch.nn.functional.one_hot(target, self.vocab).float() * self.sharpness + self.anchor


def test_self_generated_samples_from_the_model_deterministically():
    model = Counter(sharpness=40.0)
    tokens = self_generated(model, num_seqs=5, seq_len=12, seed=0, bos_id=1, batch_size=2)
    assert tokens.shape == (5, 12) and tokens.dtype == torch.long
    assert bool((tokens[:, 0] == 1).all())
    expected = (torch.arange(12) + 1) % 11
    assert bool((tokens == expected).all())  # follows the model's (near-certain) choice


def test_self_generated_is_seeded():
    model = Counter(sharpness=1.0)  # a flat-ish distribution: many possible samples
    first = self_generated(model, 6, 16, seed=7)
    assert torch.equal(first, self_generated(model, 6, 16, seed=7))
    assert not torch.equal(first, self_generated(model, 6, 16, seed=8))
    assert int(first.max()) < 11 and int(first.min()) >= 0
    assert model.training  # the model's mode is restored


def test_self_generated_rejects_bad_arguments_and_outputs():
    with pytest.raises(InputError, match="temperature"):
        self_generated(Counter(), 1, 4, seed=0, temperature=0.0)

    class Flat(nn.Module):
        def forward(self, ids):
            return torch.zeros(ids.shape[0], 5)

    with pytest.raises(InputError, match="logits"):
        self_generated(Flat(), 1, 4, seed=0)


def test_self_generated_reports_progress_with_time_left():
    messages: list[str] = []
    tokens = self_generated(Counter(), num_seqs=3, seq_len=9, seed=0, batch_size=2, progress=messages.append,
                            progress_every_s=0.0)
    assert tokens.shape == (3, 9)
    assert len(messages) == 2 * 8  # one per sampling step of each batch (no throttling here)
    shares = [int(message.split("%")[0].rsplit(" ", 1)[-1]) for message in messages]
    assert shares == sorted(shares) and shares[-1] == 100 and shares[0] < 10
    assert all("left" in message for message in messages)
    quiet: list[str] = []
    self_generated(Counter(), num_seqs=3, seq_len=9, seed=0, progress=quiet.append)  # default: every 15 s
    assert quiet == []


class Slow(Counter):
    def forward(self, ids):
        time.sleep(0.01)
        return super().forward(ids)


def test_a_long_sampling_run_is_announced_once_and_a_short_one_never(monkeypatch):
    import artifactkit.quantize.calibration as calibration

    monkeypatch.setattr(calibration, "LONG_SAMPLING_AFTER_S", 0.05)
    monkeypatch.setattr(calibration, "LONG_SAMPLING_S", 0.2)
    warnings: list[str] = []
    self_generated(Slow(), num_seqs=1, seq_len=60, seed=0, warn=warnings.append)  # ~0.6 s in all
    assert len(warnings) == 1 and "will take at least" in warnings[0] and "--calib" in warnings[0]
    monkeypatch.setattr(calibration, "LONG_SAMPLING_S", 60.0)
    warnings.clear()
    self_generated(Slow(), num_seqs=1, seq_len=60, seed=0, warn=warnings.append)
    assert warnings == []
