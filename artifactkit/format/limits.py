"""What a reader may decode or allocate for one input: the caps that bound memory by
construction, each checked before the work it bounds and named in the error it raises.

They are derived from the budget: an artifact that competes is at most 16,000,000 bytes,
and even its densest storage (int2 codes, 2 bits a parameter before entropy coding)
holds about 64M parameters. Every cap leaves at least 2x headroom over that, so only a
hostile or broken file meets one; together they keep any input of at most 16 MB, and
/dev/zero, under 2 GB of peak memory (measured: reports/fuzz.md). How much is read from
a file at all is capped in `artifactkit.io` (MAX_ARTIFACT_FILE_BYTES: 256 MiB).

| cap                          | value      | why                                                  |
|------------------------------|-----------:|------------------------------------------------------|
| MAX_HEADER_BLOCK_BYTES       | 16 MiB     | a real header is ~60 bytes a tensor, zlib'd           |
| MAX_HEADER_JSON_BYTES        | 16 MiB     | its JSON text (~250k tensors); a zlib bomb stops here |
| MAX_TOTAL_ELEMENTS           | 2**27      | 134M elements: 2.1x the int2 parameters of 16 MB      |
| MAX_DECODED_BYTES            | 256 MiB    | all raw section bytes: 2**27 int codes and their      |
|                              |            | scales fit; 2**26 float32 values (decoding one        |
|                              |            | section briefly takes twice its size)                 |
| MAX_RESTORED_BYTES           | 512 MiB    | the state dict unpack builds (numel x dtype size)      |
| MAX_ANS_TABLE_ENTRIES        | 2**24      | rANS decode tables: 1,024 at 14-bit precision; the   |
|                              |            | encoder writes at most 448 (64 levels x 7 widths)     |
| MAX_LEGACY_PAYLOAD_BYTES     | 256 MiB    | a legacy .ptz's torch.save bytes (the seed's: ~30 MB) |
| LZMA_MEMLIMIT                | 256 MiB    | xz decoder memory; preset 9 needs 65 MiB              |
"""

from __future__ import annotations

MAX_HEADER_BLOCK_BYTES = 1 << 24
MAX_HEADER_JSON_BYTES = 1 << 24
MAX_TOTAL_ELEMENTS = 1 << 27
MAX_DECODED_BYTES = 1 << 28
MAX_RESTORED_BYTES = 1 << 29
MAX_ANS_TABLE_ENTRIES = 1 << 24
MAX_LEGACY_PAYLOAD_BYTES = 1 << 28
LZMA_MEMLIMIT = 1 << 28
