"""Entropy coder for the int codes section: vectorised interleaved rANS in numpy.

Owns `encode_codes` / `decode_codes` (the "codes" section codec). Decoding runs
the standalone source in `artifactkit.format.ans_decoder_src.DECODER_SOURCE`, the same
text the exported loader pastes into a user's script.

Coder. All codes of all tensors are concatenated (row-major, tensor order) into
one stream of T symbols and split over N lanes: step t codes symbols
[t*N, (t+1)*N), one per lane, so Python overhead is paid per step (T/N steps),
never per symbol. Each lane is a classic rANS state: 32-bit states in
[2**16, 2**32) with 16-bit renormalisation words. With that choice a step emits
(encoder) or reads (decoder) at most ONE word per lane, so a step is a fixed set
of whole-array numpy ops with no inner loop; every intermediate fits int64 with
room to spare; and the per-lane flush is only 4 bytes (64-bit states with
32-bit words would double it for no gain at this precision). Frequencies are
quantised to 2**PRECISION = 2**14 (present symbols keep freq >= 1; measured
quantisation loss 0.001 % on the bench model). The encoder starts every lane at
2**16 and the decoder demands it ends there; that, exact word accounting and a
CRC32 over (shapes, bits, decoded symbols) reject any corrupt blob.

Lane count is chosen from T (one lane per LANE_SYMBOLS symbols, at least
MIN_LANES so small inputs take few steps, at most MAX_LANES). Each lane costs
its 4-byte final state (3 bytes of it overhead, measured), so lanes trade
Python-step overhead against size. Measured on the 27M-symbol bench model
(quiet machine, best of 2): 4096 lanes 14,486,715 B, encode 0.48 s / decode
0.19 s; 1024 lanes 14,477,533 B (-9.2 KB), 0.65 s / 0.36 s; 512 lanes -10.7 KB
but 0.88 s / 0.65 s. 1024 buys ~12k int6 parameters for ~0.35 s per round trip.
LANE_SYMBOLS 8192 (was 4096) halves the lanes of streams under 8.4M symbols, where time is
small anyway: on the 3-5M-code sets of reports/ans_real.md 1.1-1.4 KB (0.02-0.07 %) smaller for
~0.1 s more; a 36M model keeps its 1024 lanes.

Context model: which static table codes each code. One mechanism serves every model:
each row has a table id, each column an offset, and a code's table is
clip(row id + column offset, first, last table of its tensor's span). The encoder
picks per bit width (`contexts=True`, "auto") the smallest by estimate of:

* "levels" (the usual winner on trained weights): a row's id is its scale level,
  round(8 log2 mean(|code| + 1/2)) over the row, and a column's offset is the same of
  the column's mean after dividing out each row's, relative to the median column. The
  tables (at most 64 per bit width, 1/8 octave apart) hold the code distribution at
  each level of local spread. Trained weights differ in spread by row AND by column
  (per-row quantization normalises rows only); i.i.d. synthetic rows have no column
  structure, and there "row-levels" wins.
* "row-levels": the same with every column offset 0.
* "classes" (the AKC2 model, kept as a reference; not in "auto"): rows clustered by
  their own code histograms (quantiles of spread, then Lloyd iterations), one table per
  class. `contexts=False` ("tensor"): one table per tensor.

Chosen by measurement (bench/ans_real.py, reports/ans_real.md), per int6 codes section
vs the per-tensor order-0 bound: a model trained here (RTN) 0.9995 (classes) ->
0.9940 (levels), its GPTQ codes 0.9919 -> 0.9865, all-MiniLM-L6-v2 0.9943 -> 0.9900;
the synthetic bench model 0.9850 -> 0.9845 (row-levels, reports/ans_coder.md). Also
measured and not worth their side information or decoder bytes: the previous code in
the row as a context (no gain); the code above / a linear prediction from the row
above after a row-similarity order (0.2-0.6 % fewer code bits, more than paid back by
the permutation); the reference code of an earlier similar row as a context instead of
subtracting it (learning the extra tables costs more than it saves, on int4-int7 codes);
column statistics learned from the rows already decoded instead of stored offsets
(~0.07 % with the lanes' decoding order). A reference row per row, first measured at
0.1-0.4 % net with an O(rows^2) search, became AKC4 (below) once the embeddings showed
where it pays. The levels' side information
(~4 bits per row and per column) is about 0.3-0.5 % of a small model's codes and is
stored, because the decoder's interface has no scales; levels use float arithmetic,
so another CPU may pick other (equally valid) levels: decoding never recomputes them.

Reference rows (AKC4, `references=True`, the default): before the context model, a row may
be replaced by its residual against an earlier row of the same tensor, wrap(codes - floor((k *
earlier + 4) / 8)), k in -8..8; the decoder adds it back in row order after decoding, so the
lanes and tables are untouched and its cost is one loop over the referenced rows. Trained
embeddings hold many near-duplicate rows (tokens the data rarely uses drift together), which is
most of what lrzip's long-range matching finds in them. Measured (bench/ans_real.py,
reports/ans_real.md; the settings were chosen on the seed-A frontier artifacts and the GPTQ
model): embeddings coded alone, vs their order-0 bound, AKC3 -> AKC4 (lrzip sorted^T): the
record recipe's int7 tied embedding of a mid model 0.995 -> 0.918 (0.893), the GPTQ model's
0.946 -> 0.867 (0.873), MiniLM's word embeddings 0.9985 -> 0.992 (0.989); whole codes
sections: the GPTQ model's int6 0.9866 -> 0.9807, the record artifact 0.9929 -> 0.9868 (lrzip
0.9874). i.i.d. rows find no reference and pay only the (lzma'd, all-zero) per-row fields.
Choosing references costs ~0.5 CPU s on a 36M model (count sketch + a window along the first
principal direction, not a rows x rows search). Small tensors where that window finds near-copies
for a tenth of the rows (embeddings) compare every earlier row instead (`_candidates`): the GPTQ
model's int6 section 0.9803 -> 0.9794, MiniLM's 0.9893 -> 0.9872 (settings checked on the seed-A
artifacts, where 0.05-0.2 and 2^30-2^32 gave the same bytes).

Prototype rows (AKC5, `prototypes=True`, the default): a tensor may store up to 4 extra
rows before its first row (in the lanes in AKC5, in the table block since AKC6), which its rows reference like earlier rows (named by an absolute back
field, so lzma sees one repeated value) but which the decoder does not return. The encoder offers
one: the codes' first right singular direction scaled to the bit width's range (`_prototype`).
Late attention / MLP-up matrices of the record recipe carry 5-11 % of their energy in that one
direction (random codes: 1 %), fit's int4 MLP-up matrices more: a sign pattern shared by many rows,
which no scale context and no single earlier row captures (a 2nd-4th direction never paid, measured).
A row takes the prototype or its earlier-row candidate, whichever saves more; the prototype is kept
only when its rows save more than its own row costs. Measured (reports/ans_real.md, codes section /
order-0 bound, without -> with prototype rows): record recipe mid seed B int6 0.9927 -> 0.9916, all
int 0.9847 -> 0.9838; fit at the record's bytes, all int 0.9764 -> 0.9711 (lrzip 0.9709); MiniLM all
int 0.9885 -> 0.9868; on the GPTQ, held-out GPTQ, default pack and RTN sets equal to 4 decimals.
~0.2 s on a 36M model.

Remainder contexts (AKC6, `remainders=True`, the default): a row stored against a prototype is its
codes less round(k x prototype / 8), and that rounding throws away where k x prototype / 8 fell
between two integers, which the decoder knows: (k x prototype + 4) mod 8, in REMAINDER_BINS = 4
bins. Where codes spread little (fit's int4 matrices: mostly -1, 0, 1) and the prototype is strong
(25-66 % of the energy of its late attention and MLP-up matrices, reports/code_spectrum.md), the
residual leans measurably by bin, so such rows may take their own tables, four per table of their
group, bin-major, next to them (after every group's own tables if that keeps row ids one byte;
`_remainder_split`; used where estimated smaller with
the extra tables counted as stored, lzma'd; at most REMAINDER_TABLES per blob). To look them up
the decoder needs the prototype rows before the lanes start, so AKC6 stores prototype rows in the
table block (int8) rather than in the lanes. Measured (codes section / order-0 bound, all int
codes; int6 codes never took them): fit at the record's bytes, mid seed B 0.9709 -> 0.9653 (lrzip
0.9709) and seed A 0.9727 -> 0.9668 (held out: the bin count was chosen on seed B and the record
artifact); every other set of reports/ans_real.md unchanged. Decoder +1.08 KB.

Determinism: the same input gives the same bytes on a given numpy build.

Blob layout (little endian):
    header  "<4sBBHIIII": magic b"AKC6", precision, row-id width (1|2 bytes),
            n_tables, n_lanes, n_words, table-block length,
            CRC32 of (int64 [stored rows, stored rows * cols, bits] per tensor (stored rows:
            rows + prototype rows P), then the int8 symbols of all
            stored rows, prototypes included, as restored)
    tables  lzma-alone(uint16 freqs[n_tables, 255] over codes -127..127
                       | uint16 [first, last] table of each tensor (any values for a tensor without codes)
                       | uint8 prototype rows P of each tensor (<= 4; 0 for a tensor without rows)
                       | uint16 first remainder table R of each tensor (0: none); a code of a row that
                         names a prototype then uses table R + bin x (last - first + 1) + (its table - first)
                       | row table ids [total stored rows = rows + P per tensor], uint8 or uint16
                         (a prototype row's id is never read)
                       | int8 column offsets [sum of cols over tensors with rows]
                       | uint32 back field of each stored row [total stored rows] (0: no reference;
                         < 2**31: distance to the earlier row; else row 2**32 - 1 - back of the tensor)
                       | int8 slope k of each stored row's reference [total stored rows]; 0 without one
                       | int8 prototype rows [P x cols per tensor, tensor order])
    states  uint32[n_lanes]      final encoder states = decoder start states
    words   uint16[n_words]      renormalisation words, in decoding order
    The lanes code each tensor's own rows (not its prototype rows).
    Older blobs still decode: b"AKC5" is AKC6 without the R fields and with the prototype rows in
    the lanes, before their tensor's rows (no prototype values in the table block), b"AKC4" is AKC5
    without prototype rows (no P field, every back
    field a distance), b"AKC3" is AKC4 without the reference fields, b"AKC2" has no
    spans and no column offsets (every code uses its row's table) and b"AKC1" is AKC2 with
    the table block zlib'd.
"""

from __future__ import annotations

import functools
import lzma
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from artifactkit.errors import InputError, describe
from artifactkit.format.ans_decoder_src import DECODER_SOURCE
from artifactkit.format.codecs import lzma_dictionary_size
from artifactkit.plan.schemes import int_levels

PRECISION = 14
LANE_SYMBOLS = 8192
MIN_LANES = 16
MAX_LANES = 1024
MAX_STEPS = 1 << 17  # the decoder's limit on steps (symbols / lanes)
# The decoder accepts at most len(shapes) + 448 tables (64 levels for each of the 7 bit widths), and
# 576 more in AKC6 (REMAINDER_TABLES).
CLASS_COUNTS = (1, 4, 16, 32)
LLOYD_ITERATIONS = 2
LEVEL_RESOLUTIONS = (8, 4, 2)  # scale levels per octave, finest first
MAX_LEVEL_TABLES = 64  # per bit width
TABLE_SHARE = 0.0005  # try a coarser resolution only while tables cost more than this share of the codes
MODELS = ("auto", "levels", "row-levels", "classes", "tensor")
AUTO_MODELS = ("levels", "row-levels")  # "classes" loses to these on every model measured
STATE_LOW = 1 << 16
HEADER = struct.Struct("<4sBBHIIII")
MAGIC = b"AKC6"
# Reference rows: a row may be stored as its codes minus (k/8) x an earlier row's of the same tensor.
SLOPE_STEPS = 8  # |k| <= 8: slopes -1..1 in eighths
REFERENCE_WINDOW = 32  # candidates: this many rows on each side in each of two orders along the first principal direction
SKETCH_DIMS = 64  # candidates are compared on a random sketch of the centred rows (at most cols / 4 wide, so
# the float32 sketch never outweighs the int8 codes); the chosen candidate is checked exactly
MIN_REFERENCE_COLS = 64  # shorter rows never take a reference; the decoder relies on it (at most total / 64
# referenced rows), so this must stay >= 64
REFERENCE_MIN_COSINE = 0.2  # below this (exact, centred) a reference cannot pay for itself (measured)
REFERENCE_MARGIN_BITS = 8  # a row takes a reference only if it saves this many bits beyond the reference's own cost
REFERENCE_CHUNK = 1 << 21  # codes checked at once when choosing references (bounds the float copies)
# Where the window finds near-copies for this share of the rows, and rows x rows x cols is at most
# EXACT_SEARCH_WORK multiply-adds, every earlier row is compared instead (embeddings; see _exact_candidates).
EXACT_SEARCH_SHARE = 0.1
EXACT_SEARCH_WORK = 1 << 30
EXACT_SEARCH_BLOCK = 256  # rows compared at once (a 256 x rows float32 block)
# Prototype rows (AKC5): up to 4 extra rows (the decoder's bound) stored before a tensor's first row, which
# its rows may reference but which are not returned. The encoder stores at most one: the codes' first right
# singular direction (a 2nd-4th direction never paid, measured).
REMAINDER_BINS = 4  # contexts of a prototype row's codes by where k x prototype / 8 falls between integers
REMAINDER_TABLES = 576  # most remainder tables per blob (the decoder allows len(shapes) + 448 + 576 tables)
PROTOTYPE_ITERATIONS = 6  # power iterations for the first singular direction (it dominates where it pays)
SECTION = "codes section"


levels = int_levels  # largest |code| of symmetric `bits`-bit codes (the schemes table)


def lane_count(total_symbols: int) -> int:
    """Lanes for a stream of `total_symbols` (0 for an empty stream); never more than MAX_STEPS
    steps, which the decoder demands so that a hostile blob cannot ask for millions of steps."""
    lanes = min(MAX_LANES, max(-(-total_symbols // LANE_SYMBOLS), min(total_symbols, MIN_LANES)))
    return int(max(lanes, -(-total_symbols // MAX_STEPS)))


def quantize_frequencies(counts: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies summing to 2**precision, >= 1 wherever counts > 0.

    Proportional rounding, then the surplus or deficit goes to the largest
    entries (where a change of one costs the fewest bits)."""
    counts = np.asarray(counts, dtype=np.int64)
    total_frequency = 1 << precision
    present = counts > 0
    if present.sum() > total_frequency:
        raise InputError(describe(SECTION, "more distinct symbols than 2**precision", "raise PRECISION"))
    freqs = np.where(present, np.maximum(1, np.rint(counts * total_frequency / max(1, counts.sum()))), 0)
    freqs = freqs.astype(np.int64)
    diff = total_frequency - int(freqs.sum())
    while diff != 0:
        order = np.argsort(-freqs, kind="stable")
        if diff > 0:
            freqs[order[0]] += diff
            diff = 0
        else:
            reducible = order[freqs[order] > 1][: -diff]
            freqs[reducible] -= 1
            diff += len(reducible)
    return freqs


def _row_histograms(codes: np.ndarray, bits: int) -> np.ndarray:
    """[rows, 2**bits - 1] symbol counts per row, lowest code first."""
    rows, cols = codes.shape
    alphabet = 2 ** bits - 1
    if rows == 0 or cols == 0:
        return np.zeros((rows, alphabet), dtype=np.int64)
    index = (np.arange(rows, dtype=np.int64)[:, None] * alphabet + (codes.astype(np.int64) + levels(bits)))
    return np.bincount(index.ravel(), minlength=rows * alphabet).reshape(rows, alphabet)


def _entropy_bits(counts: np.ndarray) -> float:
    """Zero-order entropy, in bits, of all the symbols counted in `counts` (per table row)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log2(np.where(counts > 0, counts, 1) / totals), 0.0)
    return float(-terms.sum())


def _class_totals(assignment: np.ndarray, histograms: np.ndarray, classes: int) -> np.ndarray:
    """[classes, alphabet] sum of the histograms of the rows in each class."""
    order = np.argsort(assignment, kind="stable")
    starts = np.searchsorted(assignment[order], np.arange(classes))
    present = np.diff(np.append(starts, len(assignment))) > 0
    totals = np.zeros((classes, histograms.shape[1]), dtype=np.int64)
    if present.any():
        # Consecutive present classes bound each sum, since an absent class owns no rows.
        totals[present] = np.add.reduceat(histograms[order], starts[present], axis=0)
    return totals


def _cluster_rows(histograms: np.ndarray, classes: int) -> np.ndarray:
    """Row classes: quantiles of the rows' code spread, refined by Lloyd iterations that
    move each row to the class table coding it in the fewest bits."""
    totals = histograms.sum(axis=1)
    alphabet = histograms.shape[1]
    centre = (alphabet - 1) // 2
    spread = np.sqrt((histograms * (np.arange(alphabet) - centre) ** 2).sum(axis=1) / np.maximum(totals, 1))
    edges = np.quantile(spread, np.linspace(0, 1, classes + 1)[1:-1])
    assignment = np.searchsorted(edges, spread)
    weights = histograms.astype(np.float32)
    for _ in range(LLOYD_ITERATIONS):
        tables = _class_totals(assignment, histograms, classes) + 0.05
        # Smoothing lets a row move to a table that lacks one of its symbols, at a price.
        code_lengths = -np.log2(tables / tables.sum(axis=1, keepdims=True)).astype(np.float32)
        # einsum, not matmul: multithreaded BLAS stalls badly on a busy 2-core machine.
        assignment = np.einsum("ra,ka->rk", weights, code_lengths).argmin(axis=1)
    # Renumber the classes actually used as 0..k-1, ordered by first use.
    _, first, inverse = np.unique(assignment, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def _choose_classes(histograms: np.ndarray) -> np.ndarray:
    """Row class ids for one bit width, with the class count that minimises estimated bytes:
    code bits + ~1.2 bytes per stored frequency + the row ids (zlib'd: a fast stand-in
    for the lzma the blob uses)."""
    alphabet = histograms.shape[1]
    best_cost, best = np.inf, np.zeros(len(histograms), dtype=np.int64)
    for classes in CLASS_COUNTS:
        if classes > len(histograms):
            break
        assignment = _cluster_rows(histograms, classes) if classes > 1 else best * 0
        used = int(assignment.max()) + 1
        tables = _class_totals(assignment, histograms, used)
        cost = (_entropy_bits(tables) / 8 + used * alphabet * 1.2
                + len(zlib.compress(assignment.astype(np.uint8).tobytes(), 9)))
        if cost < best_cost:
            best_cost, best = cost, assignment
    return best


@dataclass
class _Plan:
    """The context model of one group of tensors (one bit width, or one tensor): `counts`
    [tables, alphabet] per local table; per member a local row table in [0, tables) and a
    column offset; a code's table is clip(row table + column offset, 0, tables - 1)."""

    model: str
    counts: np.ndarray
    row_tables: list[np.ndarray]
    column_offsets: list[np.ndarray]

    @functools.cached_property
    def code_bytes(self) -> float:
        return _entropy_bits(self.counts) / 8

    @functools.cached_property
    def table_bytes(self) -> int:
        """zlib of the tables at 8 bits (a fast stand-in for lzma of the 16-bit freqs)."""
        tables = np.where(self.counts > 0, 1 + self.counts * 255 // max(1, int(self.counts.max())), 0)
        return len(zlib.compress(tables.astype(np.uint8).tobytes(), 9))

    @functools.cached_property
    def side_bytes(self) -> int:
        side = np.concatenate([np.zeros(0, np.int64), *self.row_tables, *self.column_offsets])
        return len(zlib.compress(side.astype(np.int8).tobytes(), 9))

    def estimated_bytes(self) -> float:
        return self.code_bytes + self.table_bytes + self.side_bytes


def _remainder_bins(rows: References) -> tuple[np.ndarray, np.ndarray]:
    """(the lanes' rows that reference a prototype, the remainder bin of each of their codes): where
    k x prototype / 8 falls between two integers, (k x prototype + 4) mod 8, in REMAINDER_BINS bins.
    The residual of a row against a strong prototype is its code less a rounded prediction; the
    rounding is known to the decoder, so the bin tells it which way the code leans (int4 codes of
    fit's late attention and MLP-up matrices, where the prototype holds 25-66 % of the energy)."""
    prototypes = len(rows.prototypes)
    named = np.flatnonzero(rows.back >= 2 ** 31)
    values = rows.prototypes[2 ** 32 - 1 - rows.back[named]].astype(np.int64)
    remainder = (rows.slope[named, None] * values + SLOPE_STEPS // 2) % SLOPE_STEPS
    return named - prototypes, remainder // (SLOPE_STEPS // REMAINDER_BINS)


def _remainder_split(plan: _Plan, codes: list[np.ndarray], remainders: list[tuple[np.ndarray, np.ndarray]],
                     bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(the plan's tables without the prototype rows' codes, REMAINDER_BINS x as many tables for
    them, bin-major), or None when that is not estimated smaller than the plan's tables alone."""
    tables, alphabet = plan.counts.shape
    fine = np.zeros((REMAINDER_BINS * tables, alphabet), np.int64)
    for matrix, (rows, bins), row_table, offset in zip(codes, remainders, plan.row_tables, plan.column_offsets,
                                                       strict=True):
        if len(rows):
            context = bins * tables + np.clip(row_table[rows, None] + offset[None, :], 0, tables - 1)
            fine += np.bincount((context * alphabet + matrix[rows].astype(np.int64) + levels(bits)).ravel(),
                                minlength=fine.size).reshape(fine.shape)
    if not fine.any():
        return None
    rest = plan.counts - fine.reshape(REMAINDER_BINS, tables, alphabet).sum(axis=0)
    # Tables as stored (lzma of the quantized 16-bit freqs): the zlib stand-in of the plans misjudges
    # four times as many sparse tables by more than a small tensor's remainder contexts save.
    split = (_entropy_bits(rest) + _entropy_bits(fine)) / 8 + _stored_table_bytes([rest, fine], bits)
    return (rest, fine) if split < plan.code_bytes + _stored_table_bytes([plan.counts], bits) else None


def _stored_table_bytes(counts: list[np.ndarray], bits: int) -> int:
    """lzma'd bytes of these tables as the blob stores them (see `_encode_stream`)."""
    tables = [table for group in counts for table in _filled(group)]
    return len(compress_table_block(np.concatenate([_frequencies(table, bits) for table in tables]).astype("<u2").tobytes()))


def _plan_classes(histograms: list[np.ndarray], codes: list[np.ndarray]) -> _Plan:
    """Row classes clustered by the rows' own code histograms (the AKC2 model)."""
    stacked = np.concatenate(histograms)
    nonempty = stacked.sum(axis=1) > 0
    classes = np.zeros(len(stacked), dtype=np.int64)
    if nonempty.any():
        classes[nonempty] = _choose_classes(stacked[nonempty])
    counts = _class_totals(classes, stacked, int(classes.max()) + 1 if len(classes) else 1)
    ends = np.cumsum([len(h) for h in histograms])[:-1]
    return _Plan("classes", counts, np.split(classes, ends), [np.zeros(m.shape[1], np.int64) for m in codes])


def scale_logs(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row logs, column logs): log2 of each row's mean of |code| + 1/2, and log2 of each
    column's mean of the same divided by its row's mean, relative to the median column."""
    rows, cols = matrix.shape
    if matrix.size == 0:
        return np.zeros(rows), np.zeros(cols)
    magnitude = np.abs(matrix.astype(np.float32)) + np.float32(0.5)
    row_log = np.log2(magnitude.mean(axis=1, dtype=np.float64))
    # A matrix-vector product gives every column's mean of |code| / row mean in one pass.
    column_log = np.log2(np.einsum("rc,r->c", magnitude, np.exp2(-row_log).astype(np.float32)) / rows)
    return row_log, column_log - np.median(column_log)


def _plan_levels(histograms: list[np.ndarray], codes: list[np.ndarray], bits: int,
                 logs: list[tuple[np.ndarray, np.ndarray]], per_octave: int, columns: bool) -> _Plan:
    """Tables indexed by scale level at `per_octave` levels per octave: a row's level plus its
    column's offset (`columns`), or the row's level alone. The window of at most
    MAX_LEVEL_TABLES levels that holds the most codes is kept; levels outside it use the
    nearest table."""
    alphabet = 2 ** bits - 1
    row_levels = [np.rint(row_log * per_octave).astype(np.int64) for row_log, _ in logs]
    offsets = [np.clip(np.rint(column_log * per_octave).astype(np.int64), -127, 127) if columns
               else np.zeros(len(column_log), np.int64) for _, column_log in logs]
    low = min(int(rows.min()) + int(cols.min()) for rows, cols in zip(row_levels, offsets, strict=True))
    mass = np.zeros(1, np.int64)
    for rows, cols in zip(row_levels, offsets, strict=True):
        # Codes per level (row level + column offset): the convolution of the two histograms.
        level_counts = np.convolve(np.bincount(rows - rows.min()), np.bincount(cols - cols.min()))
        start = int(rows.min()) + int(cols.min()) - low
        mass = np.pad(mass, (0, max(0, start + len(level_counts) - len(mass))))
        mass[start:start + len(level_counts)] += level_counts
    tables = min(MAX_LEVEL_TABLES, len(mass))
    first = low + int(np.convolve(mass, np.ones(tables, np.int64), mode="valid").argmax())
    row_tables = [np.clip(rows - first, 0, tables - 1) for rows in row_levels]
    counts = np.zeros((tables, alphabet), np.int64)
    for matrix, histogram, row_table, offset in zip(codes, histograms, row_tables, offsets, strict=True):
        if columns:
            context = np.clip(row_table[:, None] + offset[None, :], 0, tables - 1)
            counts += np.bincount((context * alphabet + matrix.astype(np.int64) + levels(bits)).ravel(),
                                  minlength=tables * alphabet).reshape(tables, alphabet)
        else:
            counts += _class_totals(row_table, histogram, tables)
    return _Plan("levels" if columns else "row-levels", counts, row_tables, offsets)


def _best_levels(histograms: list[np.ndarray], codes: list[np.ndarray], bits: int, columns: bool,
                 logs: list[tuple[np.ndarray, np.ndarray]]) -> _Plan:
    """The levels plan at the resolution estimated smallest: finest first; a coarser one (fewer
    tables) is tried only while the tables cost more than TABLE_SHARE of the codes (halving the
    resolution costs more code bits than that, measured)."""
    best = None
    for per_octave in LEVEL_RESOLUTIONS:
        plan = _plan_levels(histograms, codes, bits, logs, per_octave, columns)
        if best is None or plan.estimated_bytes() < best.estimated_bytes():
            best = plan
        if plan.table_bytes < TABLE_SHARE * plan.code_bytes:
            break
    return best


def _plan_group(model: str, histograms: list[np.ndarray], codes: list[np.ndarray], bits: int) -> _Plan:
    """The plan of one group (tensors that all have codes) under `model`, or for "auto" the
    smallest by estimate of AUTO_MODELS."""
    if model == "classes":
        return _plan_classes(histograms, codes)
    if model == "tensor":
        counts = sum((h.sum(axis=0, keepdims=True) for h in histograms), np.zeros((1, 2 ** bits - 1), np.int64))
        return _Plan("tensor", counts, [np.zeros(len(h), np.int64) for h in histograms],
                     [np.zeros(m.shape[1], np.int64) for m in codes])
    logs = [scale_logs(matrix) for matrix in codes]
    names = AUTO_MODELS if model == "auto" else (model,)
    return min((_best_levels(histograms, codes, bits, name == "levels", logs) for name in names),
               key=_Plan.estimated_bytes)


def _check_inputs(shapes: Sequence[tuple[int, int]], scales: Sequence[np.ndarray], bits: Sequence[int]) -> None:
    if not len(shapes) == len(scales) == len(bits):
        raise InputError(describe(SECTION, f"{len(shapes)} tensors but {len(scales)} scale arrays and "
                                  f"{len(bits)} bit widths", "pass one of each per tensor"))
    for index, ((rows, cols), scale, width) in enumerate(zip(shapes, scales, bits, strict=True)):
        if not 2 <= int(width) <= 8:
            raise InputError(describe(f"{SECTION} tensor {index}", f"bit width {width} is outside 2..8",
                                      "quantize to 2..8 bits"))
        if rows < 0 or cols < 0:
            raise InputError(describe(f"{SECTION} tensor {index}", f"negative shape {(rows, cols)}",
                                      "pass the [rows, cols] shape"))
        if np.shape(scale) != (rows,):
            raise InputError(describe(f"{SECTION} tensor {index}", f"scales of shape {np.shape(scale)} "
                                      f"for {rows} rows", "pass one fp16 scale per row"))


def encode_codes(codes: list[np.ndarray], scales: list[np.ndarray], bits: list[int], *,
                 contexts: bool | str = True, references: bool = True, prototypes: bool = True,
                 remainders: bool = True) -> bytes:
    """Entropy-code the int8 code matrices into one self-describing blob.

    `codes[i]` is int8 [rows, cols] with values in [-levels(bits[i]), levels(bits[i])];
    `scales[i]` its row scales (length checked only, see the module docstring).
    `contexts`: True (= "auto": per bit width the model of MODELS estimated smallest), False
    (= "tensor": one table per tensor), or one model's name to force it.
    `references`: let rows be stored relative to an earlier similar row (see `reference_rows`);
    `prototypes`: or relative to a prototype row stored before the tensor's first row (AKC5);
    `remainders`: let the rows that reference a prototype take their own tables by the remainder of
    their prediction (AKC6; where estimated smaller).
    Deterministic: the same input gives the same bytes."""
    model = {True: "auto", False: "tensor"}.get(contexts, contexts) if isinstance(contexts, bool) else contexts
    if model not in MODELS:
        raise InputError(describe(SECTION, f"unknown context model {contexts!r}", f"use one of {', '.join(MODELS)}"))
    for index, matrix in enumerate(codes):
        if not isinstance(matrix, np.ndarray) or matrix.dtype != np.int8 or matrix.ndim != 2:
            raise InputError(describe(f"{SECTION} tensor {index}", "codes are not a 2-D int8 array",
                                      "pass the quantized codes as np.int8 [rows, cols]"))
    _check_inputs([matrix.shape for matrix in codes], scales, bits)
    bits = [int(width) for width in bits]
    for index, (matrix, width) in enumerate(zip(codes, bits, strict=True)):
        if matrix.size and not -levels(width) <= int(matrix.min()) <= int(matrix.max()) <= levels(width):
            raise InputError(describe(f"{SECTION} tensor {index}", f"a code exceeds ±{levels(width)} "
                                      f"for {width} bits", "clip codes to the bit width's range"))

    chosen = [reference_rows(matrix, width, prototypes) if references else _unreferenced(matrix)
              for matrix, width in zip(codes, bits, strict=True)]
    # The checksum covers what the decoder restores: each tensor's prototype rows, then its codes.
    originals = [np.concatenate([rows.prototypes, matrix]) if len(rows.prototypes) else matrix
                 for rows, matrix in zip(chosen, codes, strict=True)]
    # The lanes code each tensor's own rows (residuals where referenced); prototype rows go in the
    # table block, so the decoder knows them before the lanes start (the remainder contexts need them).
    codes = [c.stored[len(c.prototypes):] for c in chosen]
    remainder_bins = [_remainder_bins(c) for c in chosen]
    histograms = [_row_histograms(matrix, width) for matrix, width in zip(codes, bits, strict=True)]
    # Tensors without codes need no table; the rest are grouped by bit width (or one group each).
    coded = [i for i, matrix in enumerate(codes) if matrix.size]
    if model == "tensor":
        groups = [[i] for i in coded]
    else:
        groups = [[i for i in coded if bits[i] == width] for width in sorted({bits[i] for i in coded})]
    row_ids = [np.zeros(matrix.shape[0], np.int64) for matrix in codes]
    offsets = [np.zeros(matrix.shape[1] if matrix.shape[0] else 0, np.int64) for matrix in codes]
    table_range = np.zeros((len(codes), 2), np.int64)
    remainder_tables = np.zeros(len(codes), np.int64)  # first remainder table of each tensor (0: none)
    planned: list[tuple[list[int], int, _Plan, tuple[np.ndarray, np.ndarray] | None]] = []
    for members in groups:
        width = bits[members[0]]
        plan = _plan_group(model, [histograms[i] for i in members], [codes[i] for i in members], width)
        used = sum(len(split[1]) for *_, split in planned if split is not None)
        split = None
        if remainders and model != "tensor" and used + REMAINDER_BINS * len(plan.counts) <= REMAINDER_TABLES:
            split = _remainder_split(plan, [codes[i] for i in members], [remainder_bins[i] for i in members], width)
        planned.append((members, width, plan, split))
    # Each group's remainder tables next to its own tables (lzma finds their neighbours alike: ~100 B
    # on the fit artifacts) while all tables fit one-byte row ids; past 256 tables, after every
    # group's own tables, so the row ids (which name only those) stay one byte.
    adjacent = sum(len(plan.counts) + (len(split[1]) if split else 0) for *_, plan, split in planned) <= 256
    table_bits: list[int] = []
    table_counts: list[np.ndarray] = []

    def place(width: int, counts: np.ndarray) -> int:
        start = len(table_bits)
        table_bits.extend([width] * len(counts))
        table_counts.extend(_filled(counts))
        return start

    for members, width, plan, split in planned:
        start = place(width, plan.counts if split is None else split[0])
        for index, row_table, offset in zip(members, plan.row_tables, plan.column_offsets, strict=True):
            row_ids[index] = row_table + start
            offsets[index] = offset
            table_range[index] = start, start + len(plan.counts) - 1
        if split is not None and adjacent:
            remainder_tables[members] = place(width, split[1])
    for members, width, _, split in planned if not adjacent else ():
        if split is not None:
            remainder_tables[members] = place(width, split[1])
    return _encode_stream(codes, originals, bits, row_ids, offsets, table_range, table_bits, table_counts,
                          [c.back for c in chosen], [c.slope for c in chosen], [c.prototypes for c in chosen],
                          remainder_tables, remainder_bins)


def _row_bits(values: np.ndarray) -> np.ndarray:
    """Estimated bits of each row of int `values`: its length times the entropy of the two-sided
    geometric distribution P(v) ~ theta**|v| with the row's mean |v|. The yardstick for choosing
    references: a fixed model, so rows of a few candidates cannot look cheap by fitting tables
    to themselves (learned tables did, and chose references between independent rows)."""
    mean = np.abs(values).mean(axis=1)
    theta = (np.sqrt(1 + mean * mean) - 1) / np.maximum(mean, 1e-12)  # solves mean = 2 theta / (1 - theta^2)
    entropy = np.log2((1 + theta) / (1 - theta)) - mean * np.log2(np.maximum(theta, 1e-300))
    return values.shape[1] * entropy


def _sketch(matrix: np.ndarray) -> np.ndarray:
    """[rows, dims] unit-norm count sketch of the centred rows (dims = min(SKETCH_DIMS, cols // 4)):
    random signs, columns summed in random groups, built a group of columns at a time, so a huge
    tensor needs no float copy of itself."""
    rows, cols = matrix.shape
    dims = min(SKETCH_DIMS, cols // 4)
    rng = np.random.default_rng(0)
    permutation, signs = rng.permutation(cols), rng.choice(np.array([-1, 1], np.float32), cols)
    edges = np.arange(dims + 1) * cols // dims
    sketch = np.empty((rows, dims), np.float32)
    for group in range(dims):
        members = permutation[edges[group]:edges[group + 1]]
        sketch[:, group] = matrix[:, members].astype(np.float32) @ signs[members]
    # The sketch is linear, so centring the rows is subtracting each row's mean times the sketch of ones.
    ones = np.add.reduceat(signs[permutation], edges[:-1])
    sketch -= matrix.mean(axis=1, dtype=np.float32)[:, None] * ones
    sketch /= np.linalg.norm(sketch, axis=1, keepdims=True) + np.float32(1e-6)
    return sketch


def _reference_candidates(matrix: np.ndarray) -> np.ndarray:
    """Per row the most similar earlier row among REFERENCE_WINDOW neighbours on each side in two
    orders of the rows' scores on the sketch's first principal direction (-1: none earlier): by
    score, and by |score|, where a negated copy sorts next to its original (a slope k < 0 then
    serves it; measured on the seed-A artifacts, |score| alone finds fewer of the positive
    copies). The sketch is put in each order once, so every shift compares contiguous rows."""
    rows = matrix.shape[0]
    sketch = _sketch(matrix)
    direction = np.ones(sketch.shape[1], np.float32)
    for _ in range(8):  # power iteration for the sketch's first principal direction
        direction = sketch.T @ (sketch @ direction)
        direction /= np.linalg.norm(direction) + np.float32(1e-12)
    score = sketch @ direction
    best, best_similarity = np.full(rows, -1), np.zeros(rows, np.float32)
    for key in (score, np.abs(score)):
        order = np.argsort(key, kind="stable")
        ordered = sketch[order]
        for shift in range(1, min(REFERENCE_WINDOW, rows - 1) + 1):
            similarity = np.abs(np.einsum("rd,rd->r", ordered[:-shift], ordered[shift:]))
            first, second = order[:-shift], order[shift:]
            # Each pair serves its later row; within one direction every row is a target once.
            for target, source in ((first, second), (second, first)):
                better = (source < target) & (similarity > best_similarity[target])
                best[target[better]], best_similarity[target[better]] = source[better], similarity[better]
    return best


def _candidates(matrix: np.ndarray) -> np.ndarray:
    """Per row the earlier row to try as its reference (-1: none): the window search's pick, or,
    where that finds near-copies (centred cosine, checked exactly, above 4 / sqrt(cols): 4 standard
    deviations of two independent rows' cosine, so i.i.d. rows of any width rarely pass, as the
    sketch's own similarities would on narrow rows) for at least EXACT_SEARCH_SHARE of the
    rows of a small tensor (at most REFERENCE_CHUNK codes and EXACT_SEARCH_WORK multiply-adds for
    rows x rows x cols: embeddings of a few thousand rows), the best of ALL earlier rows. Measured:
    the record recipe's int7 embedding 0.911 -> 0.898 of its order-0 bound, the GPTQ model's 0.866
    -> 0.857; the synthetic model's i.i.d. rows never qualify."""
    best = _reference_candidates(matrix)
    rows = matrix.shape[0]
    if matrix.size > REFERENCE_CHUNK or rows * matrix.size > EXACT_SEARCH_WORK:
        return best
    found = np.flatnonzero(best >= 0)
    cosine = np.abs(np.einsum("rc,rc->r", _centred_unit(matrix[found]), _centred_unit(matrix[best[found]])))
    if (cosine > 4 / np.sqrt(matrix.shape[1])).sum() < EXACT_SEARCH_SHARE * rows:
        return best
    return _exact_candidates(matrix)


def _exact_candidates(matrix: np.ndarray) -> np.ndarray:
    """Per row the earlier row of highest |centred cosine| among ALL earlier rows (-1 for row 0): a
    rows x rows search, EXACT_SEARCH_BLOCK rows at a time, for the tensors where the window search
    shows many near-copies (embeddings) and whose rows^2 x cols fits EXACT_SEARCH_WORK."""
    rows = matrix.shape[0]
    unit = _centred_unit(matrix)
    best = np.full(rows, -1)
    for low in range(1, rows, EXACT_SEARCH_BLOCK):
        high = min(rows, low + EXACT_SEARCH_BLOCK)
        similarity = np.abs(unit[low:high] @ unit[:high].T)
        similarity[np.arange(low, high)[:, None] <= np.arange(high)[None, :]] = -1
        best[low:high] = similarity.argmax(axis=1)
    return best


def _centred_unit(rows: np.ndarray) -> np.ndarray:
    centred = rows.astype(np.float32)
    centred -= centred.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True) + np.float32(1e-6)
    return centred


@dataclass
class References:
    """How one tensor's rows are stored (see `reference_rows`). `stored` [P + rows, cols]: the P
    `prototypes` rows first (in the table block since AKC6), then the tensor's rows, which the lanes code; `back` / `slope` per stored row
    say which earlier stored row a row is relative to: 0 none, below 2**31 a distance, else the
    absolute row 2**32 - 1 - back (how rows name a prototype, so lzma sees one repeated value)."""

    stored: np.ndarray
    back: np.ndarray
    slope: np.ndarray
    prototypes: np.ndarray


def _unreferenced(matrix: np.ndarray) -> References:
    rows, cols = matrix.shape
    return References(matrix, np.zeros(rows, np.int64), np.zeros(rows, np.int64), np.zeros((0, cols), np.int8))


def _row_chunks(matrix: np.ndarray) -> list[slice]:
    """Slices of REFERENCE_CHUNK codes' worth of rows: float and int64 copies are made a chunk at a time."""
    rows, cols = matrix.shape
    step = max(1, REFERENCE_CHUNK // max(cols, 1))
    return [slice(low, min(rows, low + step)) for low in range(0, rows, step)]


def _prototype(matrix: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(prototype [cols] int64, estimated bits each row saves against it): the codes' first right
    singular direction (power iteration), scaled to the bit width's range. Late attention and MLP-up
    matrices and embeddings of trained models carry 5-22 % of their energy in it (random codes: ~1 %),
    which no scale context sees: a sign pattern shared by many rows. The estimate is -cols / 2
    log2(1 - cos^2) per row, a Gaussian row's saving when its part along the prototype is removed;
    the exact saving is checked before a row takes it."""
    rows, cols = matrix.shape
    chunks = _row_chunks(matrix)
    # A tensor of one chunk is converted to float once, not once per iteration.
    cached = [matrix.astype(np.float32)] if len(chunks) == 1 else None

    def blocks():
        return zip(chunks, cached, strict=True) if cached else ((chunk, matrix[chunk].astype(np.float32)) for chunk in chunks)

    direction = np.random.default_rng(0).standard_normal(cols).astype(np.float32)
    for _ in range(PROTOTYPE_ITERATIONS):
        image = np.zeros(cols, np.float32)
        for _, block in blocks():
            image += (block @ direction) @ block
        direction = image / (np.linalg.norm(image) + np.float32(1e-12))
    peak = float(np.abs(direction).max())
    prototype = np.rint(direction * (levels(bits) / peak)).astype(np.int64) if peak > 0 else np.zeros(cols, np.int64)
    norm, estimate = float(prototype @ prototype), np.zeros(rows)
    for chunk, block in blocks() if norm > 0 else ():
        cos2 = (block @ prototype.astype(np.float32)) ** 2 / np.maximum(np.einsum("rc,rc->r", block, block) * norm, 1e-12)
        estimate[chunk] = -0.5 * cols * np.log2(np.maximum(1 - cos2, 1e-6))
    return prototype, estimate


def _slope(plain: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The least-squares slope k, in eighths (|k| <= SLOPE_STEPS), of each int64 row of `plain` on its
    reference row."""
    energy = np.maximum((reference * reference).sum(axis=1), 1)
    k = np.rint(SLOPE_STEPS * (plain * reference).sum(axis=1) / energy)
    return np.clip(k, -SLOPE_STEPS, SLOPE_STEPS).astype(np.int64)


def _residual(plain: np.ndarray, reference: np.ndarray, k: np.ndarray, top: int) -> np.ndarray:
    """Each int64 row of `plain` less floor((k * its reference row + 4) / 8), wrapped into [-top, top]."""
    return (plain - (k[:, None] * reference + SLOPE_STEPS // 2) // SLOPE_STEPS + top) % (2 * top + 1) - top


def reference_rows(matrix: np.ndarray, bits: int, prototypes: bool = True) -> References:
    """How to store `matrix`'s rows: row r may be stored as wrap(codes[r] - floor((k * reference + 4) / 8)),
    wrapped into the bit width's range, where the reference is an earlier row or the tensor's prototype
    row (stored before its first row; see `_prototype`), which the decoder undoes in row order.
    Near-duplicate rows are common in trained embeddings (tokens the data rarely uses drift together)
    and in MLP input rows; i.i.d. rows find no reference.

    Earlier-row candidates per row: REFERENCE_WINDOW neighbours on each side in two orders of the rows'
    scores on their first principal direction (see `_reference_candidates`), compared on a count sketch
    of the centred rows (linear time, not a rows x rows search); the best earlier candidate is checked
    exactly. A row takes whichever of it and the prototype saves more, by estimate, when that exceeds
    the stored back distance, slope and a margin; the prototype is kept only when the rows that take it
    save more than its own row costs. Rows are checked REFERENCE_CHUNK codes at a time and the sketch
    is at most cols / 4 wide, so memory stays a few times the matrix's own int8 bytes (measured: 1.3x
    for 2^27 codes in 2,048-wide rows, 4.8x for 2^24 codes in 64-wide rows, chunk buffers included)."""
    rows, cols = matrix.shape
    if rows < 2 or cols < MIN_REFERENCE_COLS:
        return _unreferenced(matrix)
    top, slope_bits = levels(bits), np.log2(2 * SLOPE_STEPS + 1) + REFERENCE_MARGIN_BITS
    best = _candidates(matrix)
    prototype, estimate = _prototype(matrix, bits) if prototypes else (None, np.zeros(rows))
    prototype_bits = float(_row_bits(prototype[None])[0]) if prototype is not None else 0.0
    try_prototype = estimate > slope_bits
    if (estimate[try_prototype] - slope_bits).sum() <= prototype_bits:
        try_prototype[:] = False
    # Net saving in bits (-inf: not an option) and slope, per row, of [its earlier row, the prototype].
    net, slope = np.full((2, rows), -np.inf), np.zeros((2, rows), np.int64)
    for chunk in _row_chunks(matrix):
        candidate = chunk.start + np.flatnonzero(best[chunk] >= 0)
        if len(candidate):
            cosine = np.abs(np.einsum("rc,rc->r", _centred_unit(matrix[candidate]),
                                      _centred_unit(matrix[best[candidate]])))
            candidate = candidate[cosine >= REFERENCE_MIN_COSINE]
        if len(candidate):
            plain, reference = matrix[candidate].astype(np.int64), matrix[best[candidate]].astype(np.int64)
            slope[0, candidate] = _slope(plain, reference)
            residual = _residual(plain, reference, slope[0, candidate], top)
            net[0, candidate] = _row_bits(plain) - _row_bits(residual) - np.log2(candidate + 1) - slope_bits
        candidate = chunk.start + np.flatnonzero(try_prototype[chunk])
        if len(candidate):
            plain = matrix[candidate].astype(np.int64)
            reference = np.broadcast_to(prototype, plain.shape)
            slope[1, candidate] = _slope(plain, reference)
            residual = _residual(plain, reference, slope[1, candidate], top)
            net[1, candidate] = _row_bits(plain) - _row_bits(residual) - slope_bits
    net[slope == 0] = -np.inf
    # The prototype is kept only if the rows that prefer it save more than its own row costs.
    prefer = net[1] > np.maximum(net[0], 0)
    if (net[1, prefer] - np.maximum(net[0, prefer], 0)).sum() <= prototype_bits:
        net[1] = -np.inf
    choice, use = net.argmax(axis=0), net.max(axis=0) > 0
    if not use.any():
        return _unreferenced(matrix)
    index = np.arange(rows)
    # A row naming the prototype (stored row 0) does so by an absolute back field: one repeated value.
    back = np.where(use, np.where(choice == 0, index - best, 2 ** 32 - 1), 0)
    slope = np.where(use, slope[choice, index], 0)
    stored = matrix.copy()
    for chunk in _row_chunks(matrix):
        for option in (0, 1):
            chosen = chunk.start + np.flatnonzero(use[chunk] & (choice[chunk] == option))
            if len(chosen):
                plain = matrix[chosen].astype(np.int64)
                reference = matrix[best[chosen]].astype(np.int64) if option == 0 else prototype[None]
                stored[chosen] = _residual(plain, np.broadcast_to(reference, plain.shape), slope[chosen], top)
    if not (use & (choice == 1)).any():
        return References(stored, back, slope, np.zeros((0, cols), np.int8))
    kept = prototype[None].astype(np.int8)
    return References(np.concatenate([kept, stored]), np.concatenate([[0], back]), np.concatenate([[0], slope]), kept)


def _filled(counts: np.ndarray) -> list[np.ndarray]:
    """Tables inside a level window that no code uses still need a valid table: the nearest
    used one (lzma stores the repeat almost free)."""
    used = np.flatnonzero(counts.sum(axis=1) > 0)
    if not len(used):
        return list(counts)
    nearest = used[np.clip(np.searchsorted(used, np.arange(len(counts))), 0, len(used) - 1)]
    return list(counts[nearest])


def _frequencies(counts: np.ndarray, bits: int) -> np.ndarray:
    """A table's quantized frequencies over codes -127..127 (absent codes 0)."""
    full_counts = np.zeros(255, dtype=np.int64)
    full_counts[127 - levels(bits):128 + levels(bits)] = counts
    return quantize_frequencies(full_counts, PRECISION)


def _table_indices(row_ids: np.ndarray, offsets: np.ndarray, table_range: np.ndarray) -> np.ndarray:
    """[rows, cols] table of every code: what the decoder computes."""
    return np.clip(row_ids[:, None] + offsets[None, :], table_range[0], table_range[1])


def _encode_stream(codes: list[np.ndarray], originals: list[np.ndarray], bits: list[int], row_ids: list[np.ndarray],
                   offsets: list[np.ndarray], table_range: np.ndarray, table_bits: list[int],
                   table_counts: list[np.ndarray], back: list[np.ndarray], slope: list[np.ndarray],
                   prototypes: list[np.ndarray], remainder_tables: np.ndarray,
                   remainders: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """`codes`: what the lanes code, each tensor's own rows (reference rows already subtracted);
    `prototypes` its prototype rows (stored before them: `back` / `slope` per stored row say how rows
    reference earlier ones); `remainder_tables` / `remainders` where rows that reference a prototype
    take their tables. The checksum covers `originals`, the rows the decoder restores (prototypes
    included), and each tensor's stored shape."""
    precision = PRECISION
    flat = np.concatenate([matrix.ravel() for matrix in codes] + [np.zeros(0, dtype=np.int8)])
    total = len(flat)
    # Every table spans codes -127..127 (absent codes have frequency 0 and cost lzma next to nothing),
    # so the decoder needs no per-table alphabet.
    freqs = [_frequencies(counts, width) for width, counts in zip(table_bits, table_counts, strict=True)]
    # Per (table, code & 255) frequency and cumulative frequency, for one gather per symbol.
    freq_by_byte = np.zeros((len(freqs), 256), dtype=np.uint16)
    start_by_byte = np.zeros((len(freqs), 256), dtype=np.uint16)
    for table, freq in enumerate(freqs):
        byte = (np.arange(-127, 128)) & 255
        freq_by_byte[table, byte] = freq
        start_by_byte[table, byte] = np.cumsum(freq) - freq
    symbol_freq = np.empty(total, dtype=np.uint16)
    symbol_start = np.empty(total, dtype=np.uint16)
    offset = 0
    for matrix, ids, column_offsets, span, first, (rows, bins) in zip(
            codes, row_ids, offsets, table_range, remainder_tables, remainders, strict=True):
        if not matrix.size:
            continue
        table = _table_indices(ids, column_offsets, span)
        if first:
            table[rows] += first - span[0] + bins * (span[1] - span[0] + 1)
        symbol_index = table.astype(np.int32) * 256 + matrix.view(np.uint8)
        symbol_freq[offset:offset + matrix.size] = freq_by_byte.ravel()[symbol_index].ravel()
        symbol_start[offset:offset + matrix.size] = start_by_byte.ravel()[symbol_index].ravel()
        offset += matrix.size

    lanes = lane_count(total)
    state = np.full(lanes, STATE_LOW, dtype=np.int64)
    chunks: list[np.ndarray] = []
    overflow_shift = 32 - precision
    # Encode in reverse so the decoder reads steps (and words) forwards.
    for low in reversed(range(0, total, max(lanes, 1))):
        high = min(total, low + lanes)
        lane_state = state[: high - low]
        freq = symbol_freq[low:high]
        # One 16-bit word out where the state would leave [2**16, 2**32) after coding.
        spill = (lane_state >> overflow_shift >= freq).nonzero()[0]  # not np.flatnonzero: ~1.4 us less per step
        chunks.append((lane_state[spill] & 0xFFFF).astype("<u2"))
        lane_state[spill] >>= 16
        quotient, remainder = np.divmod(lane_state, freq)
        lane_state[:] = (quotient << precision) + remainder + symbol_start[low:high]
    words = np.concatenate(chunks[::-1] + [np.zeros(0, dtype="<u2")])

    id_width = 1 if max((int(ids.max()) for ids in row_ids if len(ids)), default=0) < 256 else 2
    # Prototype rows have ids (any value: the decoder never looks them up), so ids, back and slope
    # all index stored rows.
    all_ids = np.concatenate([part for rows, ids in zip(prototypes, row_ids, strict=True)
                              for part in (np.zeros(len(rows), np.int64), ids)] + [np.zeros(0, np.int64)])
    table_block = (np.concatenate(freqs + [np.zeros(0, dtype=np.int64)]).astype("<u2").tobytes()
                   + table_range.astype("<u2").tobytes()
                   + np.array([len(rows) for rows in prototypes], np.int64).astype("u1").tobytes()
                   + remainder_tables.astype("<u2").tobytes()
                   + all_ids.astype(f"<u{id_width}").tobytes()
                   + np.concatenate(offsets + [np.zeros(0, dtype=np.int64)]).astype("i1").tobytes()
                   + np.concatenate(back + [np.zeros(0, dtype=np.int64)]).astype("<u4").tobytes()
                   + np.concatenate(slope + [np.zeros(0, dtype=np.int64)]).astype("i1").tobytes()
                   + b"".join(rows.astype(np.int8).tobytes() for rows in prototypes))
    compressed_tables = compress_table_block(table_block)
    # The checksum also covers rows, size and bit width of each tensor, so decoding with the wrong
    # shapes fails; (0, n) and (0, 0) count as the same empty tensor.
    # Of the stored rows (prototypes included), so prototype counts cannot move between tensors.
    key = np.array([[len(matrix), len(matrix) * matrix.shape[1], width] for matrix, width in
                    zip(originals, bits, strict=True)], "<i8").tobytes()
    header = HEADER.pack(MAGIC, precision, id_width, len(table_bits), lanes, len(words),
                         len(compressed_tables), functools.reduce(lambda crc, matrix: zlib.crc32(
                             np.ascontiguousarray(matrix), crc), originals, zlib.crc32(key)))
    return header + compressed_tables + state.astype("<u4").tobytes() + words.tobytes()


def compress_table_block(table_block: bytes) -> bytes:
    """The table block as the decoder reads it: an lzma "alone" stream (13-byte header; the
    xz container would add ~50 bytes, and the CRC over the decoded symbols already guards it)."""
    lzma1 = {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": lzma_dictionary_size(len(table_block))}
    return lzma.compress(table_block, format=lzma.FORMAT_ALONE, filters=[lzma1])


@functools.cache
def _standalone_decoder() -> Callable[..., list[np.ndarray]]:
    """`decode_codes` from DECODER_SOURCE, executed exactly as the exported loader does."""
    namespace: dict[str, object] = {}
    exec(compile(DECODER_SOURCE, "<artifactkit.format.ans_decoder_src.DECODER_SOURCE>", "exec"), namespace)
    return namespace["decode_codes"]  # type: ignore[return-value]


def decode_codes(blob: bytes, shapes: list[tuple[int, int]], scales: list[np.ndarray],
                 bits: list[int]) -> list[np.ndarray]:
    """Exact inverse of `encode_codes`; InputError on a corrupt, truncated or inconsistent blob."""
    shapes = [(int(rows), int(cols)) for rows, cols in shapes]
    _check_inputs(shapes, scales, bits)
    try:
        decoded = _standalone_decoder()(bytes(blob), shapes, [int(width) for width in bits])
    except (ValueError, struct.error, zlib.error, lzma.LZMAError) as error:
        cause = str(error) if str(error).startswith("corrupt") else f"corrupt codes blob: {error}"
        raise InputError(describe(SECTION, cause, "re-pack the artifact; the file is damaged")) from None
    for index, (matrix, width) in enumerate(zip(decoded, bits, strict=True)):
        # Only a crafted blob (valid checksum) can get here with codes outside the bit width.
        if matrix.size and not -levels(width) <= int(matrix.min()) <= int(matrix.max()) <= levels(width):
            raise InputError(describe(f"{SECTION} tensor {index}", f"decoded codes exceed ±{levels(width)}",
                                      "re-pack the artifact; the file is damaged or foreign"))
    return decoded
