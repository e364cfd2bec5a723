"""Calibration token sources for GPTQ: windows of training shards, or text the model
samples itself. Validation shards are refused: the challenge forbids tuning anything,
quantization included, on validation data.

Both sources return a LongTensor [num_seqs, seq_len] that depends only on the inputs
and `seed`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from artifactkit.errors import CheckFailed, InputError, describe
from eval.shards import BOS_ID, ShardError, read_header, read_shard, resolve_shards

VALIDATION_MARKER = "val"
PROGRESS_EVERY_S = 15.0
LONG_SAMPLING_S = 600.0  # warn once when sampling will surely take longer than this
LONG_SAMPLING_AFTER_S = 10.0  # ... judged after this much sampling


class _SamplingEstimate:
    """Time left while sampling without a KV cache. Progress lines estimate it from work:
    the step that extends B sequences from length L costs ~B * L token-forwards (attention
    adds more at long L, per-step overhead more at short L). The one-time warning uses a
    bound instead: a step never gets cheaper as its sequences grow, so the steps left in
    this batch times the latest step time (median of the last five, against noise)
    cannot overstate the time left (later batches are not even counted): no false
    alarms, and the bound tightens as sampling goes on."""

    def __init__(self, num_seqs: int, seq_len: int, progress: Callable[[str], None] | None,
                 every_s: float, warn: Callable[[str], None] | None) -> None:
        self.total = num_seqs * seq_len * (seq_len - 1) / 2
        self.done = 0.0
        self.steps_per_batch = seq_len - 1
        self.steps = 0
        self.recent: list[float] = []
        self.progress, self.every_s, self.warn = progress, every_s, warn
        self.started = self.last = self.step_started = time.perf_counter()
        self.shape = f"{num_seqs} x {seq_len}"

    def step(self, batch: int, length: int) -> None:
        self.done += batch * length
        self.steps += 1
        now = time.perf_counter()
        in_batch = (self.steps - 1) % self.steps_per_batch + 1  # steps done in the current batch
        # A new batch starts short again (and a last, smaller batch is cheaper): forget the old steps.
        self.recent = ([] if in_batch == 1 else self.recent[-4:]) + [now - self.step_started]
        self.step_started = now
        elapsed = now - self.started
        if self.warn is not None and elapsed >= LONG_SAMPLING_AFTER_S:
            steps_left = self.steps_per_batch - in_batch
            at_least = sorted(self.recent)[len(self.recent) // 2] * steps_left  # this batch alone
            if at_least > LONG_SAMPLING_S:
                self.warn(f"notice: sampling {self.shape} calibration tokens will take at least "
                          f"{_duration(at_least)} more here (without a KV cache the cost grows with seq_len "
                          "squared); to go faster, stop and pass --calib with training shards (one forward "
                          "pass), or fewer --calib-seqs, or a shorter --seq-len")
                self.warn = None
        if self.progress is None or now - self.last < self.every_s:
            return
        self.last = now
        left = elapsed * (self.total - self.done) / max(self.done, 1.0)
        self.progress(f"sampling calibration text: {self.done / self.total:.0%} of the work after "
                      f"{_duration(elapsed)}, about {_duration(left)} left")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def tokens_from_shards(glob: str, num_seqs: int, seq_len: int, seed: int) -> torch.Tensor:
    """`num_seqs` distinct non-overlapping windows of `seq_len` tokens, drawn at random
    (seeded) from the training shards matching `glob`; windows never straddle shards.
    Refuses any matched file whose name contains "val"."""
    if num_seqs < 1 or seq_len < 1:
        raise InputError(
            f"calibration: num_seqs={num_seqs}, seq_len={seq_len}; both must be at least 1"
        )
    try:
        paths = resolve_shards(glob)
    except ShardError as exc:
        raise InputError(str(exc)) from None
    for path in paths:
        if VALIDATION_MARKER in path.name.lower():
            raise InputError(
                describe(
                    path,
                    "looks like a validation shard (its name contains 'val'); calibrating on "
                    "validation data is not allowed by the challenge rules",
                    "pass training shards (e.g. 'fineweb_train_*.bin') or use --calib self",
                )
            )
    try:
        window_counts = [read_header(path) // seq_len for path in paths]
    except ShardError as exc:
        raise InputError(str(exc)) from None
    total = sum(window_counts)
    if total < num_seqs:
        raise InputError(
            f"{glob}: the shards hold only {total} windows of {seq_len} tokens but {num_seqs} were "
            "asked for; pass more training shards, fewer calibration sequences or a shorter seq_len"
        )
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(total, generator=generator)[:num_seqs].sort().values.tolist()
    first_window = np.cumsum([0, *window_counts]).tolist()
    rows = []
    mapped: dict[int, np.ndarray] = {}
    for window in chosen:
        shard = bisect.bisect_right(first_window, window) - 1
        if shard not in mapped:
            try:
                mapped[shard] = read_shard(paths[shard])
            except ShardError as exc:
                raise InputError(str(exc)) from None
        start = (window - first_window[shard]) * seq_len
        rows.append(np.asarray(mapped[shard][start : start + seq_len], dtype=np.int64))
    return torch.from_numpy(np.stack(rows))


def self_generated(
    model: nn.Module,
    num_seqs: int,
    seq_len: int,
    seed: int,
    bos_id: int = BOS_ID,
    temperature: float = 1.0,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
    warn: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Sample `num_seqs` sequences of `seq_len` tokens from `model` (`model(ids)` ->
    logits [B, T, V]), each starting with `bos_id`, `batch_size` sequences at a time.
    Deterministic for a seed: sampling draws from one seeded torch.Generator on
    `device`. Returned on the CPU.

    A generic `model(ids)` has no KV cache, so every new token re-runs the whole prefix:
    the cost grows with seq_len**2 (measured: 4 x 256 tokens of an 11 x 512 model take
    ~43 s on a 2-core CPU, so 64 x 1024 would take hours there; on a GPU it is seconds).
    `progress` gets a line at most every `progress_every_s` seconds with an estimate of
    the time left; `warn` gets one line, after LONG_SAMPLING_AFTER_S seconds, if the rest
    will surely take over LONG_SAMPLING_S. Training shards (`tokens_from_shards`) cost one
    forward pass instead."""
    if num_seqs < 1 or seq_len < 1 or batch_size < 1:
        raise InputError(
            f"calibration: num_seqs={num_seqs}, seq_len={seq_len}, batch_size={batch_size}; "
            "all must be at least 1"
        )
    if not temperature > 0:
        raise InputError(f"calibration: temperature={temperature}; use a temperature above 0 (1.0 is usual)")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    batches = []
    eta = _SamplingEstimate(num_seqs, seq_len, progress, progress_every_s, warn)
    try:
        with torch.no_grad():
            for start in range(0, num_seqs, batch_size):
                count = min(batch_size, num_seqs - start)
                ids = torch.full((count, 1), int(bos_id), dtype=torch.long, device=device)
                for _ in range(seq_len - 1):
                    logits = model(ids)
                    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or logits.shape[:2] != ids.shape:
                        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                        raise InputError(
                            f"model: returned {shape} for input {tuple(ids.shape)}; self-generated "
                            "calibration needs model(ids) -> logits [B, T, V]"
                        )
                    last = logits[:, -1, :].float() / temperature
                    if not torch.isfinite(last).all():
                        raise CheckFailed(
                            "model: produced NaN or inf logits while sampling calibration text; "
                            "check the checkpoint or calibrate on training shards"
                        )
                    probabilities = torch.softmax(last, dim=-1)
                    next_ids = torch.multinomial(probabilities, 1, generator=generator)
                    ids = torch.cat([ids, next_ids], dim=1)
                    eta.step(count, ids.shape[1] - 1)
                batches.append(ids.cpu())
    finally:
        model.train(was_training)
    return torch.cat(batches)
