"""How well does fit's damage proxy predict measured quantization damage?

    python bench/fit_proxy.py --run-dir RUN [--samples 24] [--plans 6] [--val-tokens 32768]

RUN is a training run directory of `python -m train` (ckpt.pt, data/train_*.bin,
data/val_*.bin, tokenizer.model). The bench prepares fit's problem once (calibration on
TRAINING shards, every candidate of every matrix, damage scaled to nats by the output KL),
then measures, on the same validation tokens each time:

* single-matrix substitutions: one matrix at one candidate (drawn at random, spread over
  the candidate families), everything else float -> measured delta val_bpb vs the
  candidate's proxy damage;
* whole plans: the knapsack's plans at several budgets (no verifying pack needed: each
  plan is applied to the weights directly) -> measured delta vs the plan's summed proxy.

It reports Spearman's rank correlation for both, and the ratio of the proxy (converted
from nats per token to bits per byte with the validation set's tokens per byte) to the
measured delta. Writes reports/fit_proxy.md.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, installed or not

from artifactkit.fit.knapsack import fill_greedy, solve_knapsack  # noqa: E402
from artifactkit.fit.pipeline import FitOptions, prepare_fit  # noqa: E402
from artifactkit.io import atomic_write_text  # noqa: E402
from artifactkit.plan.banks import expand_banks, restore_banks  # noqa: E402
from artifactkit.roundtrip.evaluate import default_seq_len  # noqa: E402
from artifactkit.roundtrip.model_factory import build_model  # noqa: E402
from eval.bpb import build_byte_tables  # noqa: E402
from eval.evaluate import evaluate_bpb  # noqa: E402
from eval.runtime import load_tokenizer  # noqa: E402
from eval.shards import load_tokens  # noqa: E402


def spearman(left: list[float], right: list[float]) -> float:
    """Rank correlation with average ranks for ties (Pearson of the ranks)."""
    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        result = np.empty(len(values))
        sorted_values = np.asarray(values)[order]
        start = 0
        while start < len(values):
            end = start
            while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
                end += 1
            result[order[start:end + 1]] = (start + end) / 2
            start = end + 1
        return result
    a, b = ranks(left), ranks(right)
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True, help="A `python -m train` run directory.")
    parser.add_argument("--samples", type=int, default=24, help="Single-matrix substitutions to measure.")
    parser.add_argument("--plans", type=int, default=6, help="Whole plans (budgets) to measure.")
    parser.add_argument("--val-tokens", type=int, default=32768, help="Validation targets scored per measurement.")
    parser.add_argument("--calib-seqs", type=int, default=16, help="Calibration sequences (training shards).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lqer", type=int, default=0, help="LQER rank of fit's candidates (0: none).")
    parser.add_argument("--small-threshold", type=int, default=None,
                        help="Tensors at or below this many elements stay fp16 (default: the policy's 65,536).")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "reports" / "fit_proxy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = args.run_dir
    started = time.perf_counter()
    options = FitOptions(budget=10**12, calib=str(run / "data" / "train_*.bin"), calib_seqs=args.calib_seqs,
                         seed=args.seed, lqer_rank=args.lqer, small_threshold=args.small_threshold)
    problem = prepare_fit(run / "ckpt.pt", options)
    checkpoint, groups = problem.setup.checkpoint, problem.groups
    prepared_s = time.perf_counter() - started

    sp, _ = load_tokenizer(run / "tokenizer.model")
    tables = build_byte_tables(sp)
    tokens = load_tokens(str(run / "data" / "val_*.bin"))[: args.val_tokens + 1]
    seq_len = default_seq_len(checkpoint.config, checkpoint.train_config)
    model = build_model(checkpoint.arch, checkpoint.config, checkpoint.state_dict, where=str(run / "ckpt.pt"))
    expanded, records = expand_banks(checkpoint.state_dict)

    def measure(replacements: dict[str, torch.Tensor]) -> float:
        trial = dict(expanded)
        for name, tensor in replacements.items():
            trial[name] = tensor.to(expanded[name].dtype)
        model.load_state_dict(restore_banks(trial, records), strict=True)
        return evaluate_bpb(model, tokens, tables, seq_len=seq_len).val_bpb

    float_result = evaluate_bpb(model, tokens, tables, seq_len=seq_len)
    base = float_result.val_bpb
    nats_to_bpb = float_result.tokens / float_result.bytes / math.log(2)

    rng = random.Random(args.seed)
    pairs = [(g, i) for g, group in enumerate(groups) for i, c in enumerate(group.candidates) if c.kind == "int"]
    families = sorted({groups[g].candidates[i].family for g, i in pairs})
    chosen = []
    for number in range(args.samples):  # round-robin over families, random within each
        family = families[number % len(families)]
        pool = [(g, i) for g, i in pairs if groups[g].candidates[i].family == family and (g, i) not in chosen]
        if pool:
            chosen.append(rng.choice(pool))
    single_rows = []
    for g, i in chosen:
        group, candidate = groups[g], groups[g].candidates[i]
        delta = measure({group.name: group.entries[i].restored()}) - base
        single_rows.append((group.name, candidate.label, candidate.bytes, candidate.damage * nats_to_bpb, delta))

    costs = [[c.bytes for c in g.candidates] for g in groups]
    damages = [[c.damage for c in g.candidates] for g in groups]
    low = sum(min(row) for row in costs)
    high = sum(costs[g][min(range(len(row)), key=lambda i, row=row: (row[i], i))] for g, row in enumerate(damages))
    high = max(high, sum(max(row) for row in costs) // 2)
    plan_rows = []
    for fraction in np.linspace(0.0, 1.0, args.plans + 2)[1:-1]:
        capacity = int(low + fraction * (high - low))
        plan = solve_knapsack(costs, damages, capacity)
        if plan is None:
            continue
        plan = fill_greedy(costs, damages, plan, capacity)
        predicted = sum(damages[g][i] for g, i in enumerate(plan)) * nats_to_bpb
        delta = measure({group.name: group.entries[i].restored() for group, i in zip(groups, plan, strict=True)}) - base
        plan_rows.append((capacity, sum(costs[g][i] for g, i in enumerate(plan)), predicted, delta))

    rho_single = spearman([r[3] for r in single_rows], [r[4] for r in single_rows])
    rho_plans = spearman([r[2] for r in plan_rows], [r[3] for r in plan_rows])
    ratios = [r[3] / r[4] for r in single_rows + [(0, 0, 0) + r[2:] for r in plan_rows] if r[4] > 1e-5]
    lines = [
        "# Does fit's damage proxy predict measured damage?",
        "",
        f"Generated by `python bench/fit_proxy.py --run-dir {run} --samples {args.samples} --plans {args.plans} "
        f"--val-tokens {args.val_tokens} --calib-seqs {args.calib_seqs}{' --lqer ' + str(args.lqer) if args.lqer else ''}`"
        f" on {platform.machine()} / {platform.system()}, torch {torch.__version__}, 1 thread (a shared 2-core machine).",
        "",
        f"Checkpoint `{run / 'ckpt.pt'}` (step {checkpoint.step}); float val_bpb {base:.5f} on "
        f"{float_result.tokens:,} validation targets; the proxy is fit's damage (nats per calibration token, each "
        f"matrix and role scaled by the output KL its fewest-byte candidate causes), shown here in bpb "
        f"(x {nats_to_bpb:.4f} = tokens / bytes / ln 2). Candidates prepared in {prepared_s:.0f} s.",
        "",
        f"**Spearman rank correlation: {rho_single:.3f} over {len(single_rows)} single-matrix substitutions, "
        f"{rho_plans:.3f} over {len(plan_rows)} whole plans.** Median proxy / measured: "
        f"{float(np.median(ratios)) if ratios else math.nan:.2f} (over the {len(ratios)} points with a measured "
        "delta above 1e-5 bpb).",
        "",
        "## Single matrices (everything else float)",
        "",
        "| matrix | candidate | bytes | proxy Δbpb | measured Δbpb |",
        "|---|---|---:|---:|---:|",
        *[f"| {n} | {label} | {b:,} | {p:+.5f} | {d:+.5f} |" for n, label, b, p, d in single_rows],
        "",
        "## Whole plans (the knapsack's at several capacities)",
        "",
        "| capacity bytes | plan bytes (estimate) | proxy Δbpb | measured Δbpb |",
        "|---:|---:|---:|---:|",
        *[f"| {c:,} | {b:,} | {p:+.5f} | {d:+.5f} |" for c, b, p, d in plan_rows],
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
