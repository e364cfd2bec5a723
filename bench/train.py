"""JEPA's training overhead on this CPU: step time and tokens/s of the `tiny` preset,
JEPA (weight 0.3) against vanilla cross-entropy, measured in one process through the
real training loop. The runs alternate (vanilla, jepa, jepa, vanilla, ...) so a busy
machine slows both alike; the ratio is the result. Prints a markdown table and writes
it to reports/train_cpu_overhead.md.

    python bench/train.py [--steps 20] [--rounds 3] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

# This file is named train.py: drop its own folder from the import path so that
# `import train` finds the package, not this script.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH_DIR]

REPORT = Path(__file__).resolve().parents[1] / "reports" / "train_cpu_overhead.md"


def step_times_ms(run_dir: Path, warmup: int) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [row["step_ms"] for row in rows if not row.get("final") and row["step"] > warmup]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per objective (alternating)")
    parser.add_argument("--warmup", type=int, default=3, help="leading steps of each run not timed")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: robust when other processes share the cores; 0: torch default)")
    parser.add_argument("--report", type=Path, default=REPORT, help="markdown output")
    args = parser.parse_args()
    from train.config import apply_overrides, preset_config
    from train.data import prepare_embedded_corpus
    from train.loop import run_training

    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        prepared = prepare_embedded_corpus(Path(scratch) / "corpus")
        base = apply_overrides(preset_config("tiny"), {
            "iterations": args.steps, "save_every": 0, "val_tokens": 2048, "device": "cpu",
            "cpu_threads": args.threads,
            "train_glob": prepared.train_glob, "val_glob": prepared.val_glob, "tokenizer": str(prepared.tokenizer)})
        times: dict[str, list[float]] = {"vanilla": [], "jepa": []}
        for round_index in range(args.rounds):
            order = ["vanilla", "jepa"] if round_index % 2 == 0 else ["jepa", "vanilla"]
            for name in order:
                out = Path(scratch) / f"{name}-{round_index}"
                config = apply_overrides(base, {"out": str(out), "jepa_weight": 0.3 if name == "jepa" else 0.0})
                run_training(config, console=lambda text: None)
                times[name].extend(step_times_ms(out, args.warmup))
                print(f"round {round_index + 1}/{args.rounds} {name}: median "
                      f"{statistics.median(step_times_ms(out, args.warmup)):.1f} ms/step", flush=True)

    batch_tokens = base.batch_tokens
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["jepa"] / medians["vanilla"]
    lines = [
        "# JEPA training overhead on CPU (`tiny` preset)",
        "",
        f"`python bench/train.py --steps {args.steps} --rounds {args.rounds} --warmup {args.warmup} --threads {args.threads}`: "
        f"{args.rounds} alternating runs per objective, {args.steps} steps each, the first {args.warmup} "
        f"steps of each run untimed; median over {len(times['vanilla'])} timed steps per objective.",
        "",
        f"Model: {base.model.num_layers}L x {base.model.model_dim}, seq_len {base.seq_len}, "
        f"{batch_tokens:,} tokens/step. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} (cpu_threads {args.threads or torch.get_num_threads()}), "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| objective | median step (ms) | tokens/s | step time vs vanilla |",
        "|---|---:|---:|---:|",
        f"| vanilla CE | {medians['vanilla']:.1f} | {batch_tokens / medians['vanilla'] * 1000:,.0f} | 1.00x |",
        f"| JEPA (0.3) | {medians['jepa']:.1f} | {batch_tokens / medians['jepa'] * 1000:,.0f} | {ratio:.2f}x |",
        "",
        "JEPA's extra cost per step: a no-grad target-encoder forward with the EMA banks, the "
        "projections, predictor and VICReg terms, and the EMA update of the target banks.",
        "",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.report.with_name(f".{args.report.name}.tmp")
    tmp.write_text(table, encoding="utf-8")
    os.replace(tmp, args.report)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
