"""CPU throughput of `eval.evaluate.evaluate_bpb` next to a plain reference loop (one
forward per window, same model, same tokens) measured in the same run.

    python bench/eval_throughput.py [--seq-len 256] [--stride 64] [--max-tokens 16384] [--repeats 2] [--threads 1,2]
        [--batch-tokens 1024,8192,65536]

Prints a markdown table and writes reports/eval_cpu_throughput.md (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece
import torch
import torch.nn.functional as functional
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.bpb import build_byte_tables, count_bytes  # noqa: E402
from eval.evaluate import evaluate_bpb  # noqa: E402

SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
TEXT = SHARED / "data" / "tinyshakespeare.txt"
REPORT = ROOT / "reports" / "eval_cpu_throughput.md"


class Block(nn.Module):
    """Pre-norm attention (scaled_dot_product_attention, causal) + GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.up = nn.Linear(dim, 4 * dim, bias=False)
        self.down = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden.shape
        query, key, value = (
            part.view(batch, length, self.heads, -1).transpose(1, 2)
            for part in self.qkv(self.ln_1(hidden)).chunk(3, dim=-1)
        )
        attended = functional.scaled_dot_product_attention(query, key, value, is_causal=True)
        hidden = hidden + self.proj(attended.transpose(1, 2).reshape(batch, length, dim))
        return hidden + self.down(functional.gelu(self.up(self.ln_2(hidden))))


class BenchLM(nn.Module):
    """A small GPT-style model: learned positions, pre-norm blocks, untied head."""

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, max_seq_len: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.wpe = nn.Embedding(max_seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.tok_emb(input_ids) + self.wpe(torch.arange(input_ids.shape[1]))[None]
        for block in self.blocks:
            hidden = block(hidden)
        return self.lm_head(self.ln_f(hidden))


def reference_loop(model: nn.Module, tokens: np.ndarray, tables, seq_len: int, stride: int | None) -> tuple[float, int]:
    """One forward per window, written plainly; returns (val_bpb, targets scored)."""
    stream = torch.from_numpy(tokens.astype(np.int64))
    total = len(stream) - 1
    nll_sum, targets, byte_count, scored_until, start = 0.0, 0, 0, 0, 0
    step = stride or seq_len
    with torch.inference_mode():
        while True:
            end = start + seq_len
            if stride is None and end > total:
                break
            end = min(end, total)
            inputs, labels = stream[start:end], stream[start + 1 : end + 1]
            nll = functional.cross_entropy(model(inputs[None])[0].float(), labels, reduction="none")
            first = scored_until - start
            nll_sum += float(nll[first:].double().sum())
            targets += end - scored_until
            byte_count += int(count_bytes(tables, inputs[first:].numpy(), labels[first:].numpy()).sum())
            scored_until = end
            if end == total:
                break
            start += step
    return nll_sum / math.log(2) / byte_count, targets


def measure(model: nn.Module, tokens: np.ndarray, tables, args: argparse.Namespace, batch_sizes: list[int],
            threads: int) -> list[tuple]:
    """Rows (threads, mode, runner, batch_tokens, tok/s, ratio to reference, |delta val_bpb|)."""
    rows = []
    for mode, stride in (("standard", None), ("sliding", args.stride)):
        label = mode + (f" (stride {stride})" if stride else "")
        evaluate_bpb(model, tokens[: 4 * args.seq_len + 1], tables, args.seq_len, stride=stride)  # warm up
        best = {batch: math.inf for batch in batch_sizes}
        reference_seconds = math.inf
        results = {}
        # Alternate the runners and keep each one's best time: a busy machine slows all alike.
        for _ in range(args.repeats):
            started = time.perf_counter()
            reference_bpb, reference_targets = reference_loop(model, tokens, tables, args.seq_len, stride)
            reference_seconds = min(reference_seconds, time.perf_counter() - started)
            for batch in batch_sizes:
                started = time.perf_counter()
                results[batch] = evaluate_bpb(model, tokens, tables, args.seq_len, stride=stride, batch_tokens=batch)
                best[batch] = min(best[batch], time.perf_counter() - started)
        rows.append((threads, label, "reference loop (batch 1)", "-", reference_targets / reference_seconds, 1.0, 0.0))
        for batch in batch_sizes:
            result = results[batch]
            if result.tokens != reference_targets:
                raise SystemExit(f"target counts differ: evaluator {result.tokens}, reference {reference_targets}")
            rows.append((threads, label, "evaluate_bpb", f"{batch:,}", result.tokens / best[batch],
                         reference_seconds / best[batch], abs(result.val_bpb - reference_bpb)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; best time kept")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-tokens", default="1024,8192,65536", help="comma-separated evaluator batch sizes")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts to measure")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write the report")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER))
    tables = build_byte_tables(sp)
    ids: list[int] = []
    for paragraph in TEXT.read_text(encoding="utf-8").split("\n\n"):
        if paragraph.strip():
            ids += [1, *sp.encode(paragraph)]
        if len(ids) > args.max_tokens + 1:
            break
    tokens = np.asarray(ids[: args.max_tokens + 1], dtype=np.uint16)
    torch.manual_seed(0)
    model = BenchLM(1024, args.dim, args.layers, 4, args.seq_len).eval()

    load_at_start = os.getloadavg()[0]
    batch_sizes = [int(value) for value in args.batch_tokens.split(",")]
    thread_counts = [int(value) for value in args.threads.split(",")] if args.threads else [default_threads]
    rows = []
    for threads in dict.fromkeys(thread_counts):
        torch.set_num_threads(threads)
        rows += measure(model, tokens, tables, args, batch_sizes, threads)
    torch.set_num_threads(default_threads)

    params = sum(p.numel() for p in model.parameters())
    lines = [
        "# evaluate_bpb CPU throughput",
        "",
        f"Model: {args.layers}-layer GPT-style, width {args.dim}, vocab 1024, {params:,} parameters; "
        f"seq_len {args.seq_len}; {len(tokens) - 1:,} tokens of tinyshakespeare (shared tokenizer).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, load average "
        f"{load_at_start:.1f} at start (other processes share the CPUs; the ratios are what carry over).",
        "Reference: one forward per window (batch 1), same model and tokens, measured in the same run; "
        f"best of {args.repeats} alternating runs each.",
        "",
        "| threads | mode | runner | batch_tokens | tok/s | vs reference | abs(delta val_bpb) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {m} | {r} | {b} | {t:,.0f} | {x:.2f}x | {d:.1e} |" for n, m, r, b, t, x, d in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_report:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=REPORT.parent, prefix=".eval_cpu_throughput.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(table)
        os.replace(tmp, REPORT)
        print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
