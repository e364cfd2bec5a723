"""Benchmark: GPTQ clip search as `fit` runs it, before and after batching.

For each seed-shaped matrix shape (11 x 512 model: q/o 512x512, k/v 256x512, MLP up
1536x512, MLP down 512x1536) and both searching clip rules (`percentile`: 5
candidates, `mse`: 21), in one run:

* baseline - what `fit` did before: every candidate clip through its own GPTQ pass
  (block 128), the Hessian factored again for each, rows picked by least d H d^T;
* current  - `gptq_quantize(..., search_clip=True)` on a `PreparedHessian` (factored
  once per matrix), candidates stacked into one pass, block `DEFAULT_BLOCK_SIZE`.

Weights are Student-t with a log-normal row scale; the Hessian is X^T X of inputs with
a decaying spectrum (correlated, like real activations). It also reports how many
codes differ between the two (float reordering only; the algorithm is the same).

    python bench/gptq_speed.py [--output reports/gptq_speed.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from artifactkit.plan.clip_rules import MSE_STD_MULTIPLES, SEED_PERCENTILES, ClipRule, parse_clip_rule  # noqa: E402
from artifactkit.quantize.gptq import DEFAULT_BLOCK_SIZE, gptq_quantize, prepare_hessian  # noqa: E402

SHAPES = [("attn q/o", 512, 512), ("attn k/v", 256, 512), ("mlp up", 1536, 512), ("mlp down", 512, 1536)]
BITS = 6


def correlated_hessian(cols: int, generator: torch.Generator) -> torch.Tensor:
    mixing = torch.randn(cols, cols, generator=generator) * torch.logspace(0, -2, cols)[None, :]
    inputs = torch.randn(4 * cols, cols, generator=generator) @ mixing
    return 2 * inputs.T @ inputs / inputs.shape[0]


def heavy_tailed(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    normal = torch.randn(rows, cols, generator=generator)
    chi2 = torch.randn(4, rows, cols, generator=generator).pow(2).sum(0) / 4
    return normal / chi2.sqrt() * 0.02 * torch.exp(0.3 * torch.randn(rows, 1, generator=generator))


def fixed_rules(rule: str) -> list[ClipRule]:
    if rule == "percentile":
        return [ClipRule("percentile", quantile) for quantile in SEED_PERCENTILES]
    return [ClipRule("std", multiple) for multiple in MSE_STD_MULTIPLES] + [ClipRule("percentile", 1.0)]


def baseline(weight: torch.Tensor, hessian: torch.Tensor, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    best = None
    for fixed in fixed_rules(rule):
        codes, scales = gptq_quantize(weight, hessian, BITS, fixed, block_size=128, act_order=True)
        difference = (weight - codes.float() * scales.float()[:, None]).double()
        error = ((difference @ hessian.double()) * difference).sum(dim=1)
        if best is None:
            best = [codes, scales, error]
            continue
        better = error < best[2]
        best = [torch.where(better[:, None], codes, best[0]), torch.where(better, scales, best[1]),
                torch.where(better, error, best[2])]
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(REPO / "reports" / "gptq_speed.md"))
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    lines = ["# GPTQ clip search: per-candidate passes vs one stacked pass", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, int{BITS}, act order; "
             f"current block {DEFAULT_BLOCK_SIZE}, baseline block 128. `python bench/gptq_speed.py`.", "",
             "| matrix | rule (candidates) | baseline s | current s | speed-up | codes differing |",
             "|---|---|---:|---:|---:|---:|"]
    total_base = total_new = 0.0
    for label, rows, cols in SHAPES:
        weight = heavy_tailed(rows, cols, generator)
        hessian = correlated_hessian(cols, generator)
        for rule in ("percentile", "mse"):
            start = time.perf_counter()
            base_codes, _ = baseline(weight, hessian, rule)
            base_s = time.perf_counter() - start
            start = time.perf_counter()
            prepared = prepare_hessian(hessian, act_order=True)
            codes, _ = gptq_quantize(weight, prepared, BITS, parse_clip_rule(rule), act_order=True, search_clip=True)
            new_s = time.perf_counter() - start
            total_base, total_new = total_base + base_s, total_new + new_s
            differing = (codes != base_codes).float().mean().item()
            lines.append(f"| {label} {rows}x{cols} | {rule} ({len(fixed_rules(rule))}) | {base_s:.2f} | {new_s:.2f} | "
                         f"{base_s / new_s:.1f}x | {differing:.2e} |")
    lines += ["", f"All shapes and rules: baseline {total_base:.1f} s, current {total_new:.1f} s, "
              f"{total_base / total_new:.1f}x faster."]
    output = "\n".join(lines) + "\n"
    print(output)
    Path(args.output).write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
