"""General-purpose byte codecs for artifact sections, all from the standard library or
maintained wheels, all deterministic (same bytes in -> same bytes out), and all
decompressed with a hard output bound: a section never inflates past the size its
header declares (a decompression bomb is an error, not an allocation).

The entropy coder for integer codes (`ans`) is not a byte codec and lives in
`artifactkit/ans.py`; the artifact format routes the codes section to it.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from artifactkit.errors import InputError
from artifactkit.format.limits import LZMA_MEMLIMIT

try:  # optional dependency: `pip install artifactkit[brotli]`
    import brotli
except ImportError:  # pragma: no cover - exercised only where brotli is absent
    brotli = None


LZMA_MAX_DICTIONARY = 64 << 20  # preset 9's


class CodecError(ValueError):
    pass


def lzma_dictionary_size(length: int) -> int:
    """Dictionary for preset 9e on `length` bytes: no larger than the input (a power of two,
    at least 4 KiB, at most preset 9's). The same compressed size, but a 3 KB section takes
    0.25 ms instead of 29 ms (initialising a 64 MiB dictionary), which was most of `fit`'s
    per-candidate byte measurement; decoders also allocate less."""
    return min(LZMA_MAX_DICTIONARY, 1 << max(12, (length - 1).bit_length()))


def _lzma_compress(data: bytes) -> bytes:
    lzma2 = {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": lzma_dictionary_size(len(data))}
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=[lzma2])


def _lzma_decompress(data: bytes, limit: int) -> bytes:
    # memlimit: an xz header may ask for a 1.5 GiB dictionary; ours use at most 64 MiB
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
    out = decompressor.decompress(data, max_length=limit + 1)
    if not decompressor.eof and len(out) <= limit:
        raise CodecError("lzma stream is truncated")
    return out


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def _zlib_decompress(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj()
    out = decompressor.decompress(data, limit + 1)
    if not decompressor.eof and len(out) <= limit:
        raise CodecError("zlib stream is truncated")
    return out


# Level 22 with min_match 7: measured smaller and several times faster than plain
# level 22 on int8 code streams (see reports/pack_benchmark.md).
_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    22, min_match=7, threads=0, write_checksum=0, write_content_size=1
)


def _zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=_ZSTD_PARAMS).compress(data)


def _zstd_decompress(data: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd: {exc}") from exc
    return out


def _brotli_compress(data: bytes) -> bytes:
    return brotli.compress(data, quality=11, lgwin=24)


def _brotli_decompress(data: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out = decompressor.process(data, output_buffer_limit=limit + 1)
    if len(out) <= limit and not decompressor.is_finished():
        raise CodecError("brotli stream is truncated")
    return out


def _raw_compress(data: bytes) -> bytes:
    return bytes(data)


def _raw_decompress(data: bytes, limit: int) -> bytes:
    return bytes(data[: limit + 1])


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[bytes], bytes]
    decompress_bounded: Callable[[bytes, int], bytes]
    description: str
    module: str  # what the standalone loader must import to read it


CODECS: dict[str, Codec] = {
    "lzma": Codec("lzma", _lzma_compress, _lzma_decompress, "xz, preset 9 | extreme", "lzma"),
    "zstd": Codec("zstd", _zstd_compress, _zstd_decompress, "zstandard level 22, min_match 7", "zstandard"),
    "zlib": Codec("zlib", _zlib_compress, _zlib_decompress, "zlib level 9", "zlib"),
    "raw": Codec("raw", _raw_compress, _raw_decompress, "stored uncompressed", ""),
}
if brotli is not None:
    CODECS["brotli"] = Codec("brotli", _brotli_compress, _brotli_decompress, "brotli quality 11, lgwin 24", "brotli")

GENERAL_CODECS = tuple(name for name in CODECS if name != "raw")


def available_codecs() -> list[str]:
    return list(CODECS)


def get_codec(name: str) -> Codec:
    if name == "brotli" and brotli is None:
        raise InputError("codec 'brotli': the brotli package is not installed; pip install 'artifactkit[brotli]'")
    if name not in CODECS:
        raise InputError(f"codec {name!r}: unknown; use one of {', '.join(list(CODECS) + ['ans', 'auto'])}")
    return CODECS[name]


def compress(name: str, data: bytes) -> bytes:
    return get_codec(name).compress(data)


def decompress(name: str, data: bytes, expected_size: int, where: str) -> bytes:
    """Decompress, never producing more than `expected_size` bytes; exact size required."""
    try:
        codec = get_codec(name)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    try:
        out = codec.decompress_bounded(data, expected_size)
    except (CodecError, lzma.LZMAError, zlib.error, zstandard.ZstdError) as exc:
        raise InputError(f"{where}: {name} section is corrupt ({exc}); the file is damaged, re-create it") from exc
    except Exception as exc:
        if brotli is not None and isinstance(exc, brotli.error):
            raise InputError(f"{where}: brotli section is corrupt ({exc}); the file is damaged, re-create it") from exc
        raise
    if len(out) != expected_size:
        raise InputError(
            f"{where}: {name} section decompressed to {'more than ' if len(out) > expected_size else ''}"
            f"{min(len(out), expected_size + 1) if len(out) > expected_size else len(out)} bytes but the header "
            f"declares {expected_size}; the file is damaged or hostile, re-create it"
        )
    return out
