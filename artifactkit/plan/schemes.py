"""The one table of storage facts: which schemes exist, the integer bit range and its
levels, and where each scheme's data lives in an artifact (section, bytes per element).

Every other module asks this one: the policy (which widths are legal), the quantizer
(levels), the entropy coder (alphabet), the writer and the checked reader (section
sizes), the size report and `inspect` (bits per element). A new kind of stored data is
a new row here, not a new branch in five modules. (gguf-py's GGML_QUANT_SIZES and
safetensors' _SIZE are the models: one size table drives every byte estimate.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from artifactkit.errors import InputError


class SchemeKind(StrEnum):
    """How one tensor is stored. A StrEnum, so headers and JSON keep the plain strings."""

    INT = "int"  # per-row symmetric intN codes + one fp16 scale per row
    FP16 = "fp16"  # float16 values
    FP32 = "fp32"  # float32 values
    RAW = "raw"  # a non-float tensor in its own dtype, bytes as is
    DROP = "drop"  # not shipped (training-only tensors)


MIN_BITS, MAX_BITS = 2, 8


def int_levels(bits: int) -> int:
    """Largest |code| of symmetric intN: codes lie in [-levels, levels] (int6: 31)."""
    return 2 ** (int(bits) - 1) - 1


def valid_bits(bits: object) -> bool:
    return isinstance(bits, int) and not isinstance(bits, bool) and MIN_BITS <= bits <= MAX_BITS


def check_bits(bits: int, where: str) -> int:
    if not valid_bits(bits):
        raise InputError(f"{where}: bits={bits}: integer schemes support {MIN_BITS}..{MAX_BITS} bits; "
                         "pick a width in that range")
    return int(bits)


# dtype name (as `str(dtype)` without "torch.") -> (torch dtype, little-endian numpy dtype)
RAW_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "int64": (torch.int64, "<i8"), "int32": (torch.int32, "<i4"), "int16": (torch.int16, "<i2"),
    "int8": (torch.int8, "i1"), "uint8": (torch.uint8, "u1"), "bool": (torch.bool, "u1"),
}
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Section:
    """One payload section: its name, what its raw stream holds, its element size, whether
    its float16 elements are stored byte-split, and the first format version that has it."""

    name: str
    holds: str
    element_bytes: int
    byte_split: bool = False
    since_version: int = 1


# Payload order. A tensor's data goes to its scheme's sections, in header tensor order.
SECTION_TABLE: tuple[Section, ...] = (
    Section("codes", "int8 codes of every int tensor, row-major", 1),
    Section("scales", "float16 row scales of the int tensors, byte-split (low bytes, then high bytes)", 2,
            byte_split=True),
    Section("half", "float16 tensors, byte-split the same way", 2, byte_split=True),
    Section("fp32", "float32 tensors, little-endian", 4),
    Section("raw", "non-float tensors in their own dtype, little-endian (bool as uint8)", 1),
    Section("lowrank_codes", "int8 codes of LQER factors: A [rows, rank] then B [rank, cols], per tensor", 1,
            since_version=2),
    Section("lowrank_scales", "float16 LQER scales: A's one, then B's one per group, byte-split", 2,
            byte_split=True, since_version=2),
)
SECTIONS: tuple[str, ...] = tuple(section.name for section in SECTION_TABLE)
FORMAT_VERSIONS = (1, 2)  # 2 adds the low-rank (LQER) sections; written only when a tensor uses them


def sections_of_version(version: int) -> tuple[str, ...]:
    """The payload sections, in order, of an `.akit` file of this format version."""
    return tuple(section.name for section in SECTION_TABLE if section.since_version <= version)


def byte_split_sections() -> tuple[str, ...]:
    return tuple(section.name for section in SECTION_TABLE if section.byte_split)


@dataclass(frozen=True)
class LowRankLayout:
    """Where an int tensor's optional LQER factors go: `codes_section` gets rows*rank +
    rank*cols int8 codes (A, then B), `scales_section` 1 + rank*cols/group fp16 scales."""

    codes_section: str = "lowrank_codes"
    scales_section: str = "lowrank_scales"


LOWRANK = LowRankLayout()


def lowrank_elements(rows: int, cols: int, rank: int, group: int) -> tuple[int, int]:
    """(codes, scales) elements of rank-`rank` factors of a [rows, cols] matrix."""
    return rows * rank + rank * cols, 1 + rank * cols // group


def valid_lowrank(lowrank: object, shape: tuple[int, ...] | list[int]) -> bool:
    """A header's `lowrank` record is usable for a matrix of this shape."""
    if not isinstance(lowrank, dict) or len(shape) < 2:
        return False
    rank, group = lowrank.get("rank"), lowrank.get("group")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, group)):
        return False
    rows, cols = shape[0], numel_of(shape[1:])
    return 1 <= rank <= min(rows, cols) and 1 <= group and (rank * cols) % group == 0


@dataclass(frozen=True)
class Storage:
    """Where a scheme's data goes: `section` gets one element per tensor element,
    `row_section` (if any) one element per row (shape[0]). `nominal_bits` is the width
    per element before compression (None: set by the tensor's bits or dtype)."""

    section: str | None
    row_section: str | None = None
    nominal_bits: int | None = None
    needs_matrix: bool = False  # per-row schemes need >= 2 dims


STORAGE: dict[SchemeKind, Storage] = {
    SchemeKind.INT: Storage("codes", row_section="scales", needs_matrix=True),
    SchemeKind.FP16: Storage("half", nominal_bits=16),
    SchemeKind.FP32: Storage("fp32", nominal_bits=32),
    SchemeKind.RAW: Storage("raw"),
    SchemeKind.DROP: Storage(None),
}
_ELEMENT_BYTES = {section.name: section.element_bytes for section in SECTION_TABLE}


def parse_kind(value: object) -> SchemeKind | None:
    """The SchemeKind named by `value`, or None for anything else (a header's word is untrusted)."""
    try:
        return SchemeKind(value)
    except ValueError:
        return None


def numel_of(shape: tuple[int, ...] | list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def element_bytes(kind: SchemeKind, dtype: str) -> int:
    """Raw bytes per element in the scheme's main section (raw: the dtype's own size)."""
    if kind is SchemeKind.RAW:
        return np.dtype(RAW_DTYPES[dtype][1]).itemsize
    section = STORAGE[kind].section
    return _ELEMENT_BYTES[section] if section else 0


def section_bytes(kind: SchemeKind, shape: tuple[int, ...] | list[int], dtype: str,
                  lowrank: dict[str, int] | None = None) -> dict[str, int]:
    """Raw (uncompressed) bytes one tensor adds to each section it uses (`lowrank`: the
    header's {"rank", "group"} record of an int tensor's LQER factors, if any)."""
    storage = STORAGE[kind]
    if storage.section is None:
        return {}
    sizes = {storage.section: numel_of(shape) * element_bytes(kind, dtype)}
    if storage.row_section:
        sizes[storage.row_section] = (shape[0] if len(shape) else 1) * _ELEMENT_BYTES[storage.row_section]
    if lowrank is not None:
        codes, scales = lowrank_elements(shape[0], numel_of(shape[1:]), lowrank["rank"], lowrank["group"])
        sizes[LOWRANK.codes_section] = codes * _ELEMENT_BYTES[LOWRANK.codes_section]
        sizes[LOWRANK.scales_section] = scales * _ELEMENT_BYTES[LOWRANK.scales_section]
    return sizes


def stored_bits(kind: SchemeKind, bits: int | None, dtype: str | None = None) -> int | None:
    """Nominal bits per element before compression (int: the width; raw: the dtype's)."""
    if kind is SchemeKind.INT:
        return bits
    if kind is SchemeKind.RAW and dtype in RAW_DTYPES:
        return 8 * np.dtype(RAW_DTYPES[dtype][1]).itemsize
    return STORAGE[kind].nominal_bits


def scheme_label(kind: SchemeKind | str, bits: int | None) -> str:
    """`int6`, `fp16`, `fp32`, `raw`, `drop`."""
    return f"int{bits}" if kind == SchemeKind.INT else str(kind)
