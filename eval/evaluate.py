"""val_bpb of a causal language model over a token stream: standard (non-overlapping
windows) or sliding-window evaluation, single process or split across torchrun ranks.

The model is any callable `model(input_ids: LongTensor[B, T]) -> logits[B, T, V]`.
Window planning is a pure function (`plan_windows`) so coverage can be tested alone:

* standard: windows of `seq_len` over the first `⌊(N−1)/seq_len⌋·seq_len + 1` tokens;
  every target of those windows is scored.
* sliding: a window starts every `stride` tokens; each scores only the targets no
  earlier window scored, so all `N − 1` targets are scored exactly once, including
  those of the final, shorter window.

Sums are float64; under torch.distributed they are all-reduced once at the end.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as functional

from eval.bpb import ByteTables, bits_per_byte, count_bytes

DEFAULT_BATCH_TOKENS = 65536


class EvalError(ValueError):
    """The evaluation cannot run as asked (too few tokens, bad stride, ids out of range)."""


@dataclass(frozen=True)
class WindowPlan:
    """Windows as parallel arrays: window i feeds tokens[starts[i] : starts[i] + lengths[i]]
    and predicts tokens[starts[i] + 1 : starts[i] + lengths[i] + 1], scoring positions
    `score_from[i] .. lengths[i] - 1` of it."""

    starts: np.ndarray
    lengths: np.ndarray
    score_from: np.ndarray
    mode: str

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def scored_targets(self) -> int:
        return int((self.lengths - self.score_from).sum())


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation measured. `val_loss` is nats per scored target; `val_bpb`
    is `nll_sum / ln 2 / bytes`."""

    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    nll_sum: float
    mode: str
    seq_len: int
    stride: int | None
    windows: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def standard_scored_targets(num_tokens: int, seq_len: int) -> int:
    """How many targets standard evaluation scores over `num_tokens` tokens:
    `⌊(N−1)/seq_len⌋·seq_len`, from the first that many + 1 tokens (0 when not one window
    of `seq_len` fits; `plan_windows` refuses that case)."""
    if num_tokens < 2 or seq_len < 1:
        return 0
    return (num_tokens - 1) // seq_len * seq_len


def plan_windows(num_tokens: int, seq_len: int, stride: int | None = None) -> WindowPlan:
    """Plan the evaluation windows over a stream of `num_tokens` tokens (targets are
    tokens 1..N-1). `stride=None` is standard evaluation; any stride is sliding."""
    if seq_len < 1:
        raise EvalError(f"seq_len is {seq_len:,}; it must be at least 1")
    total_targets = num_tokens - 1
    if stride is None:
        count = standard_scored_targets(num_tokens, seq_len) // seq_len
        if count == 0:
            raise EvalError(
                f"{num_tokens:,} tokens are fewer than one window of seq_len {seq_len:,} + 1; "
                "use more validation tokens or a smaller --seq-len"
            )
        starts = np.arange(count, dtype=np.int64) * seq_len
        lengths = np.full(count, seq_len, dtype=np.int64)
        return WindowPlan(starts, lengths, np.zeros(count, dtype=np.int64), "standard")
    if not 1 <= stride <= seq_len:
        raise EvalError(f"stride is {stride:,}; it must lie in [1, seq_len={seq_len:,}]")
    if total_targets < 1:
        raise EvalError(f"{num_tokens:,} tokens give no target to score; use more validation tokens")
    # Window k starts at k*stride; it is the last one once it reaches the final target.
    count = max(1, math.ceil((total_targets - seq_len) / stride) + 1) if total_targets > seq_len else 1
    starts = np.arange(count, dtype=np.int64) * stride
    ends = np.minimum(starts + seq_len, total_targets)
    previous_ends = np.concatenate([[0], ends[:-1]])
    return WindowPlan(starts, ends - starts, previous_ends - starts, "sliding")


def _distributed_rank_and_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _Progress:
    """A plain-text progress line on stderr (no dependency); silent when disabled."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.last_draw = 0.0

    def update(self, done: int, tokens: int) -> None:
        """`done` windows and `tokens` scored targets so far."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        elapsed = max(now - self.started, 1e-9)
        width = 30
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\reval [{bar}] {done}/{self.total} windows  {tokens / elapsed:,.0f} scored tok/s  {elapsed:.0f}s"
        )
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def evaluate_bpb(
    model: Callable[[torch.Tensor], torch.Tensor],
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    stride: int | None = None,
    device: str | torch.device = "cpu",
    max_tokens: int | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Score `tokens` with `model` and return val_loss / val_bpb (see the module doc).

    `max_tokens` scores at most that many targets (the first `max_tokens + 1` tokens).
    `batch_tokens` bounds the tokens per forward pass (at least one window). A
    `torch.nn.Module` is moved to `device` and put in eval mode for the call (its
    training flag is restored). bf16 autocast on CUDA, float32 elsewhere. The
    progress line goes to stderr when `progress` is True, never when it is False, and
    when it is None (the default) only if stderr is a terminal.
    """
    device = torch.device(device)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise EvalError(f"tokens must be a 1-D integer array, got {tokens.dtype} with shape {tokens.shape}")
    if max_tokens is not None:
        if max_tokens < 1:
            raise EvalError(f"max_tokens is {max_tokens:,}; it must be at least 1")
        tokens = tokens[: max_tokens + 1]
    lowest, highest = (int(tokens.min()), int(tokens.max())) if tokens.size else (0, 0)
    if lowest < 0 or highest >= tables.table_size:
        raise EvalError(
            f"token ids span [{lowest}, {highest}] but the byte tables cover "
            f"{tables.table_size:,} ids; use the tokenizer the shards were made with"
        )
    plan = plan_windows(int(tokens.size), seq_len, stride)
    rank, world_size = _distributed_rank_and_size()
    first, last = len(plan) * rank // world_size, len(plan) * (rank + 1) // world_size
    device_tables = tables.to_torch(device)
    windows_per_batch = max(1, batch_tokens // seq_len)

    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.to(device)
        model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, targets, bytes
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(last - first, enabled=rank == 0 and show)
    started = time.perf_counter()
    offsets = np.arange(seq_len + 1, dtype=np.int64)
    scored_so_far = 0
    try:
        with torch.inference_mode():
            batch_start = first
            while batch_start < last:
                batch_end = min(batch_start + windows_per_batch, last)
                length = int(plan.lengths[batch_start])
                # Only the final sliding window can be shorter: give it its own batch.
                same = plan.lengths[batch_start:batch_end] == length
                batch_end = batch_start + int(np.argmin(same)) if not same.all() else batch_end
                starts = plan.starts[batch_start:batch_end]
                rows = tokens[starts[:, None] + offsets[: length + 1]].astype(np.int64)
                batch = torch.from_numpy(rows).to(device, non_blocking=True)
                inputs, targets = batch[:, :-1], batch[:, 1:]
                with _autocast(device):
                    logits = model(inputs)
                if logits.ndim != 3 or logits.shape[:2] != inputs.shape:
                    raise EvalError(
                        f"model returned logits of shape {tuple(logits.shape)} for input {tuple(inputs.shape)}; "
                        "the model must map input_ids [B, T] to logits [B, T, V]"
                    )
                if logits.shape[-1] <= highest:
                    raise EvalError(
                        f"model vocabulary {logits.shape[-1]:,} is smaller than token id {highest}; "
                        "the model and the validation shards use different tokenizers"
                    )
                nll = functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
                ).view(targets.shape)
                score_from = torch.from_numpy(plan.score_from[batch_start:batch_end]).to(device)
                scored = torch.arange(length, device=device)[None, :] >= score_from[:, None]
                byte_counts = count_bytes(device_tables, inputs, targets)
                sums[0] += nll.double()[scored].sum()
                sums[1] += scored.sum()
                sums[2] += byte_counts[scored].sum()
                scored_so_far += int((plan.lengths[batch_start:batch_end] - plan.score_from[batch_start:batch_end]).sum())
                batch_start = batch_end
                bar.update(batch_start - first, scored_so_far)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    if world_size > 1:
        torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM)
    nll_sum, target_count, byte_count = (float(value) for value in sums.cpu().tolist())
    target_count, byte_count = int(target_count), int(byte_count)
    if byte_count == 0:
        raise EvalError(
            f"the {target_count:,} scored targets count 0 bytes (all control or unknown ids); "
            "check that the shards and the tokenizer match"
        )
    return EvalResult(
        val_loss=nll_sum / target_count,
        val_bpb=bits_per_byte(nll_sum, byte_count),
        tokens=target_count,
        bytes=byte_count,
        nll_sum=nll_sum,
        mode=plan.mode,
        seq_len=seq_len,
        stride=stride,
        windows=len(plan),
        seconds=time.perf_counter() - started,
    )
