"""The standalone decoder of the rANS codes section, kept as source text.

`DECODER_SOURCE` is the single source of truth for decoding: `artifactkit.format.ans`
executes this very text to decode, and the exported loader pastes it verbatim
into a user's script, so the two can never disagree. It needs only numpy and the
standard library, imports nothing from artifactkit, and is kept small because its
bytes count against the artifact budget. It defines
`decode_codes(blob, shapes, bits) -> list[np.ndarray]`, which raises on any
corrupt, truncated or inconsistent blob: `ValueError` ("corrupt codes blob: ...")
from its own checks, `struct.error` / `zlib.error` / `lzma.LZMAError` from a
mangled header or table block (`artifactkit.format.ans.decode_codes` turns all of them
into InputError).
The blob layout is documented in `artifactkit.format.ans`. Reading the source: a code's
table is clip(its row's id + its column's offset, the tensor's [first, last] span); an
AKC1/AKC2 blob has no spans and no offsets, so each code uses its row's table, clipped
to all tables. An AKC4 blob then adds back each reference row's (k x earlier row + 4) // 8,
in row order, wrapped into the bit width (the back distance, |k| <= 8 and the bit width are
checked per row; only rows of >= 64 codes take references, so at most total / 64 rows may
have one, which bounds that Python loop for a hostile blob as MAX_STEPS bounds the lanes').
An AKC5 blob stores up to 4 prototype rows before each tensor's rows (counted in the table
block, checked before any row is read; the checksum key holds each tensor's stored rows, so a
count moved from one tensor to another fails it); rows name them with a back field >= 2**31
(absolute row 2**32 - 1 - back, checked to be earlier; the encoder writes one only for a
prototype, and an AKC4 blob never has one, but any other earlier row could only fail the
checksum), and they are dropped from what is returned.
An AKC6 blob keeps the prototype rows in the table block (the lanes code only each tensor's own
rows; `e` counts the stored rows they skip), and a tensor with a first remainder table R > 0
codes each row that names a prototype with table R + bin x S + (its table - first), bin =
(k x prototype + 4) mod 8 // 2 and S the span's width (R + 4 S checked against the table count
per such row); after the lanes the prototype rows are put back before their tensor's rows, so
the reference loop and the checksum see the AKC5 layout. A nonzero slope without a reference is
rejected (the encoder never writes one). Some table-block bytes still cannot change the output,
so a flip there decodes to the right codes: R of a tensor whose rows name no prototype, the ids
of prototype rows, the spans of tensors without codes. Spans and prototype values are widened
to int before any arithmetic (numpy 1.x would compute uint16 / int8 products in 16 / 8 bits).
The clip keeps every table index inside the tables whatever the ids and
offsets say (a hostile value can only fail the checksum); the header check caps the
steps at 2**17 (a hostile one-lane blob), the tables at len(shapes) + 448 (+ 576 remainder
tables in AKC6) and the precision at 14 (what the encoder writes; 15 would double the lookup
table a hostile header can ask for: ~130 KB per table).
Each code's table index is computed a block of rows (about 2**22 codes) at a time, so decoding
needs ~5.5 bytes per code at peak (int32 index, int8 output; whole-tensor int64 temporaries took
~16, which put a legitimate 2**27-code artifact over the 2 GiB the fuzz campaign allows).
Size: 5,373 bytes (AKC5's was 4,290, AKC4's 3,642, AKC3's 3,026, AKC2's 2,707).
"""

from __future__ import annotations

DECODER_SOURCE = '''\
import lzma, struct, zlib
import numpy as np

def decode_codes(blob, shapes, bits):
    \"\"\"artifactkit rANS codes blob -> list of int8 arrays of these shapes.\"\"\"
    def check(ok, why):
        if not ok:
            raise ValueError("corrupt codes blob: " + why)
    magic, prec, idw, ntab, lanes, nwords, mlen, crc = struct.unpack_from("<4sBBHIIII", blob)
    check(magic[:3] == b"AKC" and b"1" <= magic[3:] <= b"6", "unknown version %r; export the loader with the artifactkit that packed it" % magic)
    v6, M, nt = magic == b"AKC6", 1 << prec, len(shapes)
    v5 = v6 or magic == b"AKC5"
    v4 = v5 or magic == b"AKC4"
    v3, ncol = v4 or magic == b"AKC3", sum(c for r, c in shapes if r)
    check(8 <= prec <= 14 and idw in (1, 2) and ntab <= nt + 448 + 576 * v6 and ntab << prec < 1 << 31, "header")
    unz = zlib.decompressobj() if magic == b"AKC1" else lzma.LZMADecompressor(memlimit=1 << 28)
    pa = 510 * ntab + v3 * 4 * nt
    head = pa + v5 * nt + v6 * 2 * nt
    size = lambda rows, pv: head + idw * rows + v3 * ncol + 5 * v4 * rows + pv
    meta = unz.decompress(blob[24:24 + mlen], size(sum(r for r, c in shapes) + 4 * nt, 4 * ncol * v6) + 1)
    check(len(meta) >= head, "table block size")
    pro = np.frombuffer(meta, "u1", nt * v5, pa).astype(int) if v5 else [0] * nt
    rem = np.frombuffer(meta, "<u2", nt * v6, pa + nt).astype(int) if v6 else [0] * nt
    check(all(p <= 4 and (r or not p) for p, (r, c) in zip(pro, shapes)), "prototype rows")
    nrow, cols = [r + p for p, (r, c) in zip(pro, shapes)], [c for r, c in shapes]
    key = np.array([[r, r * c, b] for r, c, b in zip(nrow, cols, bits)], "<i8").tobytes()
    e = [p * v6 for p in pro]
    n = [(r - x) * c for r, x, c in zip(nrow, e, cols)]
    total, rows, pvn = sum(n), sum(nrow), sum(x * c for x, c in zip(e, cols))
    check(lanes << 17 >= total, "header")
    check(len(blob) == 24 + mlen + 4 * lanes + 2 * nwords and (total > 0) == (0 < lanes <= total), "blob length")
    check(len(meta) == size(rows, pvn), "table block size")
    at = head + idw * rows + v3 * ncol
    freq = np.frombuffer(meta, "<u2", 255 * ntab).astype(int)
    span = np.frombuffer(meta, "<u2", 2 * nt, 510 * ntab).reshape(-1, 2).astype(int) if v3 else [(0, ntab - 1)] * nt
    ids = np.frombuffer(meta, "<u%d" % idw, rows, head).astype(int)
    off = np.frombuffer(meta, "i1", ncol, at - ncol).astype(int) if v3 else np.zeros(ncol, int)
    check((freq.reshape(-1, 255).sum(1) == M).all(), "table sums")
    check(all(lo <= hi < ntab or not k for (lo, hi), k in zip(span, n)), "table spans")
    sym = np.tile(np.arange(-127, 128) & 255, ntab)
    table = np.repeat(sym | freq << 8, freq) | (np.arange(ntab * M) - np.repeat(np.cumsum(freq) - freq, freq)) << 24
    rb = np.frombuffer(meta, "<u4", rows * v4, at * v4).astype(int)
    rk = np.frombuffer(meta, "i1", rows * v4, (at + 4 * rows) * v4).astype(int)
    gs = np.split(np.frombuffer(meta, "i1", pvn, size(rows, 0)), np.cumsum([x * c for x, c in zip(e, cols)])[:-1])
    check(np.count_nonzero(rb) * 64 <= total and not rk[rb == 0].any(), "references")
    base, o, k = np.empty(total, np.int32), 0, 0
    cut = np.cumsum(nrow)[:-1]
    for r, c, t, (lo, hi), x, f, B, K, g in zip(nrow, cols, np.split(ids, cut), span, e, rem, np.split(rb, cut), np.split(rk, cut), gs):
        h, S = (1 << 22) // (c + 1) + 1, hi - lo + 1  # h rows at a time: bounded temporaries
        for i in range(x, r, h):
            base[o + (i - x) * c:o + (min(i + h, r) - x) * c] = (np.clip(t[i:i + h, None] + off[k:k + c], lo, hi) * M).ravel()
        for i in np.flatnonzero(B >> 31) if f else ():
            j = 4294967295 - B[i]
            check(j < x <= i and abs(K[i]) <= 8 and f + 4 * S <= ntab, "references")
            base[o + (i - x) * c:o + (i - x + 1) * c] += (f - lo + ((K[i] * g[j * c:j * c + c].astype(int) + 4) % 8 >> 1) * S) * M
        o, k = o + (r - x) * c, k + c * (r > 0)
    x = np.frombuffer(blob, "<u4", lanes, 24 + mlen).astype(int)
    words = np.frombuffer(blob, "<u2", nwords, 24 + mlen + 4 * lanes).astype(int)
    out, pos = np.empty(total, np.int8), 0
    for lo in range(0, total, lanes or 1):
        s = x[:total - lo]
        v = table[base[lo:lo + lanes] + (s & (M - 1))]
        out[lo:lo + lanes] = v & 255
        s[:] = (v >> 8 & 65535) * (s >> prec) + (v >> 24)
        need = (s < 65536).nonzero()[0]
        check(pos + len(need) <= nwords, "words run out")
        s[need] = s[need] << 16 | words[pos:pos + len(need)]
        pos += len(need)
    if pvn:  # prototype rows back before their tensor's rows; base freed first: no new peak
        del base
        out = np.concatenate([z for g, d in zip(gs, np.split(out, np.cumsum(n)[:-1])) for z in (g, d)] + [out[:0]])
    res = [a.reshape(r, c) for a, r, c in zip(np.split(out, np.cumsum([r * c for r, c in zip(nrow, cols)])[:-1]), nrow, cols)]
    for a, w, B, K in zip(res, bits, np.split(rb, cut), np.split(rk, cut)):
        for i in np.flatnonzero(B):
            j = i - B[i] if B[i] < 1 << 31 else 4294967295 - B[i]
            check(0 <= j < i and abs(K[i]) <= 8 and 1 < w < 9, "references")
            h = (1 << w - 1) - 1
            a[i] = (a[i] + (K[i] * a[j].astype(int) + 4) // 8 + h) % (2 * h + 1) - h
    check(pos == nwords and (x == 65536).all() and zlib.crc32(out, zlib.crc32(key)) == crc, "checksum")
    return [a[p:] for a, p in zip(res, pro)]
'''
