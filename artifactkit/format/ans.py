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

Context model (`contexts=True`). Rows differ mainly in how peaked their codes
are (a row's max |w| relative to its spread). The fp16 row scale predicts that
only when row norms are alike across rows, so instead of deriving the context
from the scale, the encoder clusters the rows of each bit width into at most
max(CLASS_COUNTS) classes (rows start in quantiles of their code spread, then
Lloyd iterations move each row to the table that codes it in the fewest bits),
picks the class count that minimises the estimated total (code bits + tables +
row ids), and stores one table per (bits, class) plus each row's class id
(~5 bits per row, ~0.2 % of the bench model). Measured in
reports/ans_coder.md: 0.986 of the per-tensor bound whatever the spread of row
norms, while scale buckets reach 0.986 only when norms are alike and 0.994 /
0.999 at lognormal sigma 0.3 / 0.6 (before table and coder overhead); and the
decoder needs no extra code. `contexts=False` stores one table per tensor.
Scales are therefore not needed to decode; the argument is kept (and its length
checked) so the interface does not change if a scale-conditioned model of the
row ids is added later (worth ~0.03-0.07 % on the bench model).

Determinism: the same input gives the same bytes on a given numpy build; the
clustering uses float arithmetic, so another CPU or numpy may choose other
(equally valid) classes.

Blob layout (little endian):
    header  "<4sBBHIIII": magic b"AKC2", precision, row-id width (1|2 bytes),
            n_tables, n_lanes, n_words, table-block length,
            CRC32 of (int64 [rows, rows * cols, bits] per tensor, then the int8 symbols)
    tables  lzma-alone(uint16 freqs[n_tables, 255] over codes -127..127 | row table
            ids [total rows], uint8 or uint16; rows without codes may hold any id)
            (b"AKC1", the first version, holds the same block zlib'd and still decodes;
            lzma is 2.6 KB smaller on the bench model.)
    states  uint32[n_lanes]      final encoder states = decoder start states
    words   uint16[n_words]      renormalisation words, in decoding order
"""

from __future__ import annotations

import functools
import lzma
import struct
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from artifactkit.errors import InputError, describe
from artifactkit.format.ans_decoder_src import DECODER_SOURCE
from artifactkit.format.codecs import lzma_dictionary_size
from artifactkit.plan.schemes import int_levels

PRECISION = 14
LANE_SYMBOLS = 4096
MIN_LANES = 16
MAX_LANES = 1024
# The decoder accepts at most len(shapes) + 224 tables: 32 classes for each of the 7 bit widths.
CLASS_COUNTS = (1, 4, 16, 32)
LLOYD_ITERATIONS = 2
STATE_LOW = 1 << 16
HEADER = struct.Struct("<4sBBHIIII")
MAGIC = b"AKC2"
SECTION = "codes section"


levels = int_levels  # largest |code| of symmetric `bits`-bit codes (the schemes table)


def lane_count(total_symbols: int) -> int:
    """Lanes for a stream of `total_symbols` (0 for an empty stream)."""
    return int(min(MAX_LANES, max(-(-total_symbols // LANE_SYMBOLS), min(total_symbols, MIN_LANES))))


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
                 contexts: bool = True) -> bytes:
    """Entropy-code the int8 code matrices into one self-describing blob.

    `codes[i]` is int8 [rows, cols] with values in [-levels(bits[i]), levels(bits[i])];
    `scales[i]` its row scales (length checked only, see the module docstring).
    Deterministic: the same input gives the same bytes."""
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

    histograms = [_row_histograms(matrix, width) for matrix, width in zip(codes, bits, strict=True)]
    row_ids = [np.zeros(matrix.shape[0], dtype=np.int64) for matrix in codes]
    table_bits: list[int] = []
    table_counts: list[np.ndarray] = []
    if contexts:
        for width in sorted(set(bits)):
            members = [i for i, b in enumerate(bits) if b == width]
            stacked = np.concatenate([histograms[i] for i in members])
            nonempty = stacked.sum(axis=1) > 0
            if not nonempty.any():
                continue
            classes = np.zeros(len(stacked), dtype=np.int64)
            classes[nonempty] = _choose_classes(stacked[nonempty])
            for cls in range(int(classes[nonempty].max()) + 1):
                table_bits.append(width)
                table_counts.append(stacked[nonempty & (classes == cls)].sum(axis=0))
            global_ids = classes + len(table_bits) - int(classes[nonempty].max()) - 1
            global_ids[~nonempty] = 0
            ends = np.cumsum([len(histograms[i]) for i in members])
            for i, part in zip(members, np.split(global_ids, ends[:-1]), strict=True):
                row_ids[i] = part
    else:
        for index, (matrix, width) in enumerate(zip(codes, bits, strict=True)):
            row_ids[index] = np.full(matrix.shape[0], len(table_bits), dtype=np.int64)
            if matrix.size:
                table_bits.append(width)
                table_counts.append(histograms[index].sum(axis=0))
            else:
                row_ids[index][:] = 0
    return _encode_stream(codes, bits, row_ids, table_bits, table_counts)


def _encode_stream(codes: list[np.ndarray], bits: list[int], row_ids: list[np.ndarray],
                   table_bits: list[int], table_counts: list[np.ndarray]) -> bytes:
    precision = PRECISION
    flat = np.concatenate([matrix.ravel() for matrix in codes] + [np.zeros(0, dtype=np.int8)])
    total = len(flat)
    # Every table spans codes -127..127 (absent codes have frequency 0 and cost zlib next to nothing),
    # so the decoder needs no per-table alphabet.
    freqs = []
    for width, counts in zip(table_bits, table_counts, strict=True):
        full_counts = np.zeros(255, dtype=np.int64)
        full_counts[127 - levels(width):128 + levels(width)] = counts
        freqs.append(quantize_frequencies(full_counts, precision))
    # Per (table, code & 255) frequency and cumulative frequency, for one gather per symbol.
    freq_by_byte = np.zeros((len(freqs), 256), dtype=np.uint16)
    start_by_byte = np.zeros((len(freqs), 256), dtype=np.uint16)
    for table, freq in enumerate(freqs):
        byte = (np.arange(-127, 128)) & 255
        freq_by_byte[table, byte] = freq
        start_by_byte[table, byte] = np.cumsum(freq) - freq
    all_ids = np.concatenate(row_ids + [np.zeros(0, dtype=np.int64)])
    symbol_freq = np.empty(total, dtype=np.uint16)
    symbol_start = np.empty(total, dtype=np.uint16)
    offset = 0
    for matrix, ids in zip(codes, row_ids, strict=True):
        # Broadcasting the row's table over its columns is ~20x faster than np.repeat.
        symbol_index = (ids * 256).astype(np.int32)[:, None] + matrix.view(np.uint8)
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
        spill = np.flatnonzero(lane_state >> overflow_shift >= freq)
        chunks.append((lane_state[spill] & 0xFFFF).astype("<u2"))
        lane_state[spill] >>= 16
        quotient, remainder = np.divmod(lane_state, freq)
        lane_state[:] = (quotient << precision) + remainder + symbol_start[low:high]
    words = np.concatenate(chunks[::-1] + [np.zeros(0, dtype="<u2")])

    id_width = 1 if len(table_bits) <= 256 else 2
    table_block = (np.concatenate(freqs + [np.zeros(0, dtype=np.int64)]).astype("<u2").tobytes()
                   + all_ids.astype(f"<u{id_width}").tobytes())
    compressed_tables = compress_table_block(table_block)
    # The checksum also covers rows, size and bit width of each tensor, so decoding with the wrong
    # shapes fails; (0, n) and (0, 0) count as the same empty tensor.
    key = np.array([[matrix.shape[0], matrix.size, width] for matrix, width in zip(codes, bits, strict=True)],
                   "<i8").tobytes()
    header = HEADER.pack(MAGIC, precision, id_width, len(table_bits), lanes, len(words),
                         len(compressed_tables), zlib.crc32(flat, zlib.crc32(key)))
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
