"""Benchmark (issue 6): how far below the default `ans` pack can ANY coder go on the
synthetic seed-shaped checkpoint?

The synthetic weights are, by construction (artifactkit/synthetic.py), i.i.d.
Student-t(4) within a row, times one factor per row; int6/int8 codes are
round(w / s) clipped to the bit width, with s the row's fp16 scale. So the codes
of a row are i.i.d. draws from a discretised, clipped t4 of width rho = sigma/s:
a one-parameter family, and nothing (no column, row-order or cross-tensor
structure) links one code to another beyond rho.

Floors computed here, all optimistic (a real coder pays more):

* codes: per row, the code length under the family member that fits THAT row's
  codes best (rho fitted to the row by maximum likelihood over a 2,048-point grid,
  the parameter itself free). This is at most the ideal code length with the true
  rho given for free. Shown next to the entropy of the coder's own model (its row
  classes, tables free), and the smaller of the two is taken.
* fp16 sections (row scales, fp16 tensors): per tensor, the empirical entropy of
  (sign, exponent, top 4 mantissa bits) plus 6 bits for the low mantissa bits,
  which are uniform for any smooth distribution. An estimate, biased low.

Everything else (row parameters, tables, lane states, headers) is counted as 0.

    python bench/ans_floor.py [--output reports/ans_information_floor.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pack import seed_pipeline  # noqa: E402

from artifactkit.format import ans  # noqa: E402
from artifactkit.format.akit import encode_artifact  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.synthetic import seed_shaped_state_dict  # noqa: E402

GRID = 2048
LOW_MANTISSA_BITS = 6


def t4_cdf(t: np.ndarray) -> np.ndarray:
    """Student-t CDF with 4 degrees of freedom (closed form)."""
    return 0.5 + t * (t * t + 6) / (2 * (t * t + 4) ** 1.5)


def family_code_lengths(bits: int, rho: np.ndarray) -> np.ndarray:
    """[len(rho), 2**bits - 1] code lengths in bits of each code under each width."""
    top = ans.levels(bits)
    k = np.arange(-top, top + 1, dtype=np.float64)
    upper = t4_cdf((k[None, :] + 0.5) / rho[:, None])
    lower = t4_cdf((k[None, :] - 0.5) / rho[:, None])
    upper[:, -1], lower[:, 0] = 1.0, 0.0  # clipping puts the tails on the end codes
    return -np.log2(np.maximum(upper - lower, 1e-300))


def codes_floor(histograms: np.ndarray, bits: int) -> tuple[float, int]:
    """(bytes under the best-fitting member per row, rows whose fit sits on the grid's edge)."""
    rho = np.exp(np.linspace(np.log(0.05), np.log(400.0), GRID))
    costs = histograms.astype(np.float64) @ family_code_lengths(bits, rho).T
    best = costs.argmin(axis=1)
    return float(costs.min(axis=1).sum() / 8), int(((best == 0) | (best == GRID - 1)).sum())


def fp16_floor(values: list[np.ndarray]) -> float:
    """Estimated bytes to store fp16 arrays losslessly (see the module docstring)."""
    total_bits = 0.0
    for array in values:
        words = np.asarray(array, dtype=np.float16).ravel().view(np.uint16).astype(np.int64)
        _, counts = np.unique(words >> LOW_MANTISSA_BITS, return_counts=True)
        total_bits += -(counts * np.log2(counts / counts.sum())).sum() + LOW_MANTISSA_BITS * len(words)
    return total_bits / 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(REPO / "reports" / "ans_information_floor.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    model = quantize_state_dict(seed_shaped_state_dict())
    seed_bytes = seed_pipeline(model)[0]
    packed = encode_artifact(model, "ans")
    sections = {s["name"]: s["stored_bytes"] for s in packed.header["sections"]}
    ints = [e for e in model.entries if e.scheme.kind == "int"]
    widths = sorted({int(e.scheme.bits) for e in ints})

    rows = []
    codes_total = 0.0
    for width in widths:
        members = [e for e in ints if int(e.scheme.bits) == width]
        histograms = np.concatenate([ans._row_histograms(e.quantized.codes.numpy(), width) for e in members])
        family, edge_rows = codes_floor(histograms, width)
        classes = ans._choose_classes(histograms)
        class_entropy = ans._entropy_bits(ans._class_totals(classes, histograms, int(classes.max()) + 1)) / 8
        floor = min(family, class_entropy)
        codes_total += floor
        rows.append((f"int{width} codes ({len(histograms):,} rows)", family, class_entropy, floor, edge_rows))
    scales_floor = fp16_floor([e.quantized.scales.numpy() for e in ints])
    half_floor = fp16_floor([e.values.numpy() for e in model.entries if e.scheme.kind == "fp16"])
    floor_total = codes_total + scales_floor + half_floor + sections.get("fp32", 0)
    target = 0.95 * seed_bytes

    lines = ["# Information floor of the synthetic seed-shaped checkpoint", "",
             "`python bench/ans_floor.py` (one run, this machine). Why these are floors: see the script's docstring.",
             "", f"Seed pipeline (torch.save + lzma-6): {seed_bytes:,} bytes; 0.95 x seed = {target:,.0f} bytes. "
             f"Default `pack` (codec ans): {packed.artifact_bytes:,} bytes = {packed.artifact_bytes / seed_bytes:.4f} "
             "x seed.", "",
             "| part | t4 family, rho fitted per row, free | coder's row classes, tables free | floor used | "
             "default pack stores |", "|---|---:|---:|---:|---:|"]
    for label, family, class_entropy, floor, edge_rows in rows:
        note = f" ({edge_rows} rows at the grid edge)" if edge_rows else ""
        lines.append(f"| {label}{note} | {family:,.0f} | {class_entropy:,.0f} | {floor:,.0f} | |")
    lines.append(f"| codes section (floor: the codes alone; pack: words + tables + row ids + lane states) | | | "
                 f"{codes_total:,.0f} | "
                 f"{sections['codes']:,} |")
    lines.append(f"| fp16 row scales (estimate) | | | {scales_floor:,.0f} | {sections['scales']:,} |")
    lines.append(f"| fp16 tensors (estimate) | | | {half_floor:,.0f} | {sections['half']:,} |")
    lines.append(f"| fp32 tensors | | | {sections.get('fp32', 0):,} | {sections.get('fp32', 0):,} |")
    lines.append(f"| header | | | 0 | {packed.artifact_bytes - sum(sections.values()):,} |")
    lines.append(f"| **total** | | | **{floor_total:,.0f}** | **{packed.artifact_bytes:,}** |")
    verdict = ("above" if floor_total > target else "below")
    lines += ["", f"The floor is {floor_total / seed_bytes:.4f} x seed, {verdict} the 0.95 x seed target by "
              f"{abs(floor_total - target):,.0f} bytes, with row parameters, tables, lane states and headers "
              f"counted as zero. The default pack is {packed.artifact_bytes / floor_total:.4f} x this floor.",
              "", f"Run time {time.perf_counter() - started:.0f} s."]
    output = "\n".join(lines) + "\n"
    print(output)
    Path(args.output).write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
