"""The one validation pass over an `.akit` file's structure, run before anything is
decoded by every reader path (`ArtifactReader`: inspect, check, unpack, size-report,
roundtrip-eval, export-loader --artifact). The exported loader repeats the same checks
in its own few lines (`loader_template`), and `tests/artifactkit/test_fuzz.py` feeds
both the same hostile files.

What it checks, each failure one InputError naming the file, the cause and the fix:

* the preamble (magic, version, header length) and the header block: bounded zlib,
  strict JSON (no NaN, no nesting past Python's limit, no 5,000-digit numbers);
* every header field's type; tensor names unique; shapes of non-negative integers
  whose totals stay under the caps in `artifactkit.format.limits` (elements, decoded
  bytes, restored bytes), computed on Python integers so they cannot overflow;
  known schemes, bit widths, dtypes (float8 / complex are not storable), codecs;
* bank records consistent with the tensor list: members exist, belong to one bank,
  have the bank's dtype and shape[1:], and number shape[0]; bank names are new names;
* the section table: the version's sections in order, each declaring exactly the raw
  bytes its tensors need (`artifactkit.plan.schemes.section_bytes`), stored sizes that
  add up to the payload, a codec that exists for that section;
* the policy record parses.

Decoding (`ArtifactReader.validate`) then proves every section decodes to its declared
size, bounded by it, so `check` passing means `unpack` and the loader succeed.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any, NamedTuple

from artifactkit.errors import InputError
from artifactkit.format import codecs
from artifactkit.format.akit import FORMAT_NAME, LOWRANK_FORMAT_VERSION, MAGIC, PREAMBLE
from artifactkit.format.limits import (
    MAX_ANS_TABLE_ENTRIES,
    MAX_DECODED_BYTES,
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_JSON_BYTES,
    MAX_RESTORED_BYTES,
    MAX_TOTAL_ELEMENTS,
)
from artifactkit.plan.policy import Policy
from artifactkit.plan.schemes import (
    FLOAT_DTYPES,
    FORMAT_VERSIONS,
    RAW_DTYPES,
    SECTIONS,
    STORAGE,
    SchemeKind,
    element_bytes,
    parse_kind,
    section_bytes,
    sections_of_version,
    valid_bits,
    valid_lowrank,
)

FIX = "the artifact is damaged or not an .akit file, re-create it with 'artifactkit pack'"
MAX_DIMENSION = 1 << 40
HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "tensors": list, "sections": list, "payload_bytes": int, "payload_sha256": str, "banks": list,
    "dropped": list, "policy": dict,
}


def require(condition: bool, where: str, cause: str) -> None:
    """The reader's check: a failed one is an InputError naming the file and the fix."""
    if not condition:
        raise InputError(f"{where}: {cause}; {FIX}")


def is_int(value: object) -> bool:
    """A JSON integer (bool is not one, though Python says so)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Span(NamedTuple):
    """Where one section's stored bytes lie in the payload, and what they decode to."""

    offset: int
    stored: int
    codec: str
    raw: int


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_header(data: bytes | memoryview, where: str) -> tuple[int, dict[str, Any], int]:
    """(format version, header, payload offset) of an `.akit` file's bytes."""
    require(len(data) >= PREAMBLE.size, where, f"file is {len(data)} bytes, shorter than the {PREAMBLE.size}-byte preamble")
    magic, version, header_len = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise InputError(f"{where}: not an .akit artifact (bad magic {bytes(magic[:8])!r}); "
                         "pass a file written by 'artifactkit pack' (legacy .ptz files are detected by content)")
    if version not in FORMAT_VERSIONS:
        raise InputError(f"{where}: artifact format version {version} is not supported (this artifactkit reads "
                         f"versions {', '.join(map(str, FORMAT_VERSIONS))}); upgrade artifactkit")
    require(header_len <= MAX_HEADER_BLOCK_BYTES, where,
            f"header length {header_len:,} is over the {MAX_HEADER_BLOCK_BYTES:,}-byte limit")
    require(PREAMBLE.size + header_len <= len(data), where,
            f"header declares {header_len:,} bytes but the file ends first (truncated)")
    block = data[PREAMBLE.size : PREAMBLE.size + header_len]
    try:
        decompressor = zlib.decompressobj()
        text = decompressor.decompress(block, MAX_HEADER_JSON_BYTES + 1)
    except zlib.error as exc:
        raise InputError(f"{where}: header is corrupt ({exc}); {FIX}") from exc
    require(len(text) <= MAX_HEADER_JSON_BYTES, where,
            f"header inflates past the {MAX_HEADER_JSON_BYTES:,}-byte limit (a compression bomb?)")
    require(decompressor.eof, where, "header block is truncated")
    try:
        header = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise InputError(f"{where}: header JSON nests deeper than any artifact header (a hostile file?); {FIX}") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, NaN, numbers with > 4,300 digits
        raise InputError(f"{where}: header is corrupt ({str(exc)[:120]}); {FIX}") from exc
    require(isinstance(header, dict) and header.get("format") == FORMAT_NAME, where, "header has no akit/1 format tag")
    for key, kind in HEADER_TYPES.items():
        require(key in header, where, f"header lacks '{key}'")
        require(isinstance(header[key], kind) and not isinstance(header[key], bool), where,
                f"header field '{key}' is not a {kind.__name__}")
    for key, kind in (("meta", dict), ("codec", str)):
        require(key not in header or isinstance(header[key], kind), where, f"header field '{key}' is not a {kind.__name__}")
    return int(version), header, PREAMBLE.size + header_len


def _element_size(kind: SchemeKind, dtype: str) -> int:
    """Bytes per element of the tensor `unpack` restores."""
    return element_bytes(kind, dtype) if kind is SchemeKind.RAW else FLOAT_DTYPES[dtype].itemsize


def check_tensors(tensors: list[Any], where: str, version: int) -> dict[str, int]:
    """Validate the tensor list; the raw bytes each section must hold."""
    sizes = dict.fromkeys(SECTIONS, 0)
    total = restored = 0
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        require(isinstance(tensor, dict) and isinstance(tensor.get("name"), str), where, f"tensor #{index} has no name")
        name = tensor["name"]
        require(name not in seen, where, f"tensor {name!r} is listed twice")
        seen.add(name)
        shape = tensor.get("shape")
        require(isinstance(shape, list) and all(is_int(d) and 0 <= d < MAX_DIMENSION for d in shape), where,
                f"tensor {name!r} has an invalid shape {str(shape)[:80]}")
        numel = math.prod(shape)
        total += numel
        require(total <= MAX_TOTAL_ELEMENTS, where, f"the tensor shapes add up to more than the "
                f"{MAX_TOTAL_ELEMENTS:,}-element limit (tensor {name!r}: {numel:,})")
        kind = parse_kind(tensor.get("scheme"))
        require(kind is not None and kind is not SchemeKind.DROP, where,
                f"tensor {name!r} has an unknown scheme {str(tensor.get('scheme'))[:40]!r}")
        if kind is SchemeKind.INT:
            require(valid_bits(tensor.get("bits")), where, f"tensor {name!r} has an invalid int scheme")
            require(tensor.get("clip") is None or isinstance(tensor.get("clip"), str), where,
                    f"tensor {name!r} has an invalid clip record")
        if STORAGE[kind].needs_matrix:
            require(len(shape) >= 2, where, f"tensor {name!r} has an invalid int scheme")
        dtype = tensor.get("dtype")
        allowed = RAW_DTYPES if kind is SchemeKind.RAW else FLOAT_DTYPES
        require(isinstance(dtype, str) and dtype in allowed, where,
                f"tensor {name!r} has dtype {str(dtype)[:40]!r}, which no artifact stores "
                f"(known: {', '.join(allowed)})")
        require(isinstance(tensor.get("category", "other"), str), where, f"tensor {name!r} has an invalid category")
        lowrank = tensor.get("lowrank")
        if lowrank is not None:
            require(version >= LOWRANK_FORMAT_VERSION and kind is SchemeKind.INT and valid_lowrank(lowrank, shape),
                    where, f"tensor {name!r} has an invalid low-rank record {str(lowrank)[:80]}")
        restored += numel * _element_size(kind, dtype)
        require(restored <= MAX_RESTORED_BYTES, where,
                f"the tensors restore to more than the {MAX_RESTORED_BYTES:,}-byte limit")
        for section, size in section_bytes(kind, shape, dtype, lowrank).items():
            sizes[section] += size
    require(sum(sizes.values()) <= MAX_DECODED_BYTES, where,
            f"the sections would decode to more than the {MAX_DECODED_BYTES:,}-byte limit")
    return sizes


def check_banks(banks: list[Any], tensors: list[dict[str, Any]], where: str) -> None:
    """Bank records name existing tensors of the bank's dtype and shape, each in one bank."""
    by_name = {t["name"]: t for t in tensors}
    claimed: set[str] = set()
    names: set[str] = set()
    for index, bank in enumerate(banks):
        require(isinstance(bank, dict) and isinstance(bank.get("name"), str), where, f"bank record #{index} has no name")
        name, shape, members = bank["name"], bank.get("shape"), bank.get("members")
        require(name not in by_name and name not in names, where,
                f"bank {name!r} has the name of another tensor or bank")
        names.add(name)
        require(isinstance(shape, list) and len(shape) >= 1 and all(is_int(d) and d >= 0 for d in shape)
                and isinstance(members, list) and len(members) == shape[0] > 0, where,
                f"bank {name!r} has an invalid shape or member list")
        for member in members:
            tensor = by_name.get(member) if isinstance(member, str) else None
            require(tensor is not None, where, f"bank {name!r} names {str(member)[:80]!r}, which is not a stored tensor")
            require(member not in claimed, where, f"tensor {member!r} belongs to two banks")
            claimed.add(member)
            require(tensor["shape"] == shape[1:] and tensor["dtype"] == bank.get("dtype"), where,
                    f"bank {name!r} is {bank.get('dtype')} {shape} but its member {member!r} is "
                    f"{tensor['dtype']} {tensor['shape']}")


def check_sections(sections: list[Any], expected: dict[str, int], version: int, payload_bytes: int,
                   where: str) -> dict[str, Span]:
    """The section table against the tensor list; each section's span in the payload."""
    require(all(isinstance(s, dict) for s in sections)
            and [s.get("name") for s in sections] == list(sections_of_version(version)), where,
            f"section table is malformed (version {version} has the sections "
            f"{', '.join(sections_of_version(version))}, in that order)")
    spans: dict[str, Span] = {}
    offset = 0
    for section in sections:
        name, stored, raw, codec = section["name"], section.get("stored_bytes"), section.get("raw_bytes"), section.get("codec")
        require(is_int(stored) and stored >= 0 and is_int(raw), where, f"section '{name}' sizes are malformed")
        require(raw == expected[name], where, f"section '{name}' declares {raw:,} raw bytes but its tensors need "
                f"{expected[name]:,}")
        require(isinstance(codec, str) and (codec in codecs.CODECS or codec == "brotli"
                                             or (codec == "ans" and name == "codes")), where,
                f"section '{name}' has an unknown codec {str(codec)[:40]!r}")
        require(codec != "raw" or stored == raw, where, f"raw section '{name}' stores {stored:,} bytes, not {raw:,}")
        spans[name] = Span(offset, stored, codec, raw)
        offset += stored
    require(offset == payload_bytes, where, "section sizes do not add up to the payload size")
    return spans


def check_policy(policy: dict[str, Any], where: str) -> Policy:
    try:
        return Policy.from_json(policy)
    except InputError as exc:
        raise InputError(f"{where}: header {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise InputError(f"{where}: the header's policy record is malformed ({type(exc).__name__}: "
                         f"{str(exc)[:80]}); {FIX}") from exc


def check_header(header: dict[str, Any], version: int, payload_bytes: int, where: str) -> dict[str, Span]:
    """Every structural check after parsing; the sections' spans."""
    require(header["payload_bytes"] == payload_bytes, where,
            f"payload is {payload_bytes:,} bytes but the header declares {header['payload_bytes']:,} "
            f"({'truncated' if payload_bytes < header['payload_bytes'] else 'trailing bytes'})")
    expected = check_tensors(header["tensors"], where, version)
    check_banks(header["banks"], header["tensors"], where)
    require(all(isinstance(name, str) for name in header["dropped"]), where, "the dropped list is malformed")
    check_policy(header["policy"], where)
    return check_sections(header["sections"], expected, version, payload_bytes, where)


def check_ans_tables(blob: bytes | memoryview, where: str) -> None:
    """The rANS blob's decode tables (n_tables x 2**precision int64 entries, built before
    its checksum can be verified) must stay under MAX_ANS_TABLE_ENTRIES."""
    if len(blob) >= 8:
        precision, tables = blob[4], struct.unpack_from("<H", blob, 6)[0]
        require(tables << min(precision, 32) <= MAX_ANS_TABLE_ENTRIES, where,
                f"codes section asks for {tables:,} decode tables at {precision}-bit precision, over the "
                f"{MAX_ANS_TABLE_ENTRIES:,}-entry limit")
