"""The `.akit` artifact format, writing side: encode a `QuantizedModel` into sections and
one self-describing file. No pickle anywhere. The checked reader is
`artifactkit.format.reader`; which section holds which scheme's data, with its element
size, is the table in `artifactkit.plan.schemes`.

Layout (all integers little-endian):

    magic     8 bytes  b"AKIT\\r\\n\\x1a\\n"  (PNG-style: catches text-mode mangling)
    version   u16      FORMAT_VERSION
    hlen      u32      length of the header block
    header    hlen     zlib-compressed UTF-8 JSON (sorted keys, compact)
    payload   ...      the sections, concatenated in header order, nothing else

The header names every tensor (shape, original dtype, category, scheme, bits, clip),
the policy, the bank records needed to restore banks, the dropped tensor names, and
each section's codec, raw size and stored size, plus the sha256 of the payload.
Sections hold tensor data sequentially in header tensor order (`SECTION_TABLE`):

    codes   int8 codes of every int-quantized tensor, row-major
    scales  their float16 row scales, byte-split (all low bytes, then all high bytes)
    half    float16 tensors, byte-split the same way
    fp32    float32 tensors, little-endian
    raw     non-float tensors in their own dtype, little-endian

Readers validate all of it before decoding (`artifactkit.format.validate`), then
decompress each section bounded by its declared size, and the declared sizes are capped
(`artifactkit.format.limits`), so a hostile header cannot make a reader allocate more.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifactkit.errors import InputError
from artifactkit.format import ans, codecs
from artifactkit.io import atomic_write_bytes
from artifactkit.plan.classify import UserRules
from artifactkit.plan.policy import Policy
from artifactkit.plan.schemes import (
    LOWRANK,
    RAW_DTYPES,
    SECTIONS,
    STORAGE,
    SchemeKind,
    byte_split_sections,
    sections_of_version,
)
from artifactkit.quantize.apply import QuantEntry, QuantizedModel, quantize_state_dict

MAGIC = b"AKIT\r\n\x1a\n"
# Version 1: five sections. Version 2 adds the LQER sections; the writer uses it only when a
# tensor carries low-rank factors, so every other artifact stays version 1, byte for byte.
FORMAT_VERSION = 1
LOWRANK_FORMAT_VERSION = 2
FORMAT_NAME = "akit/1"  # the header's format tag; the preamble's version says which sections follow
PREAMBLE = struct.Struct("<8sHI")
ANS_SIDE_CODECS = ("lzma", "zlib")  # for the sections that are not int codes, under `ans`
DEFAULT_CODEC = "ans"  # measured smallest and fastest: reports/pack_benchmark.md
# Sections whose elements are float16 and stored byte-split; the others are stored as is.
BYTE_SPLIT_SECTIONS = byte_split_sections()


def byte_split(values: np.ndarray) -> bytes:
    """fp16 values -> all low bytes, then all high bytes (compresses ~6% better)."""
    raw = values.astype("<f2").view(np.uint8).reshape(-1, 2)
    return raw[:, 0].tobytes() + raw[:, 1].tobytes()


def byte_join(data: bytes, count: int) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.uint8)
    joined = np.empty((count, 2), dtype=np.uint8)
    joined[:, 0], joined[:, 1] = array[:count], array[count:]
    return joined.reshape(-1).view("<f2")


def entry_arrays(entry: QuantEntry) -> dict[str, np.ndarray]:
    """The flat arrays one entry contributes, per section (its scheme's row of STORAGE)."""
    storage = STORAGE[entry.scheme.kind]
    if entry.scheme.kind is SchemeKind.INT:
        arrays = {storage.section: entry.quantized.codes.numpy().reshape(-1).astype(np.int8, copy=False),
                  storage.row_section: entry.quantized.scales.numpy().reshape(-1).astype("<f2", copy=False)}
        if entry.lowrank is not None:
            factors = entry.lowrank
            arrays[LOWRANK.codes_section] = np.concatenate([factors.a_codes.numpy().reshape(-1),
                                                            factors.b_codes.numpy().reshape(-1)]).astype(np.int8)
            arrays[LOWRANK.scales_section] = np.concatenate([factors.a_scale.numpy().reshape(-1),
                                                             factors.b_scales.numpy().reshape(-1)]).astype("<f2")
        return arrays
    if entry.scheme.kind is SchemeKind.RAW:
        values = entry.values.to(torch.uint8) if entry.dtype == "bool" else entry.values
        return {storage.section: values.numpy().reshape(-1).astype(RAW_DTYPES[entry.dtype][1]).view(np.uint8)}
    dtype = "<f2" if entry.scheme.kind is SchemeKind.FP16 else "<f4"
    return {storage.section: entry.values.numpy().reshape(-1).astype(dtype, copy=False)}


def section_streams(model: QuantizedModel) -> dict[str, bytes]:
    """The uncompressed bytes of every section, in the documented layout."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SECTIONS}
    for entry in model.entries:
        for section, array in entry_arrays(entry).items():
            parts[section].append(array)
    streams = {}
    for name in SECTIONS:
        joined = np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=np.uint8)
        streams[name] = byte_split(joined) if name in BYTE_SPLIT_SECTIONS else joined.tobytes()
    return streams


@dataclass
class PackedArtifact:
    data: bytes
    header: dict[str, Any]
    model: QuantizedModel

    @property
    def artifact_bytes(self) -> int:
        return len(self.data)


def encode_section(name: str, stream: bytes, codec: str, model: QuantizedModel) -> tuple[str, bytes]:
    """(codec actually used, stored bytes) of one section under `codec` (ans / auto / a byte codec)."""
    if codec == "ans":
        if name != "codes":
            # Scales and small tensors are a few hundred KB, so trying codecs is cheap. Only
            # standard-library ones: the exported loader then needs numpy + torch + stdlib.
            return min((encode_section(name, stream, side, model) for side in ANS_SIDE_CODECS),
                       key=lambda result: len(result[1]))
        int_entries = [e for e in model.entries if e.scheme.is_int]
        blob = ans.encode_codes([e.quantized.codes.numpy() for e in int_entries],
                                [e.quantized.scales.numpy() for e in int_entries],
                                [int(e.scheme.bits) for e in int_entries])
        return "ans", blob
    if codec == "auto":
        candidates = list(codecs.GENERAL_CODECS) + (["ans"] if name == "codes" else [])
        return min((encode_section(name, stream, candidate, model) for candidate in candidates),
                   key=lambda result: len(result[1]))
    if not stream:
        return "raw", b""
    return codec, codecs.compress(codec, stream)


def format_version(model: QuantizedModel) -> int:
    """1, unless a tensor carries LQER factors (then 2, which adds their sections)."""
    return LOWRANK_FORMAT_VERSION if any(e.lowrank is not None for e in model.entries) else FORMAT_VERSION


def encode_artifact(model: QuantizedModel, codec: str = DEFAULT_CODEC) -> PackedArtifact:
    if codec not in ("auto", "ans"):
        codecs.get_codec(codec)
    for entry in model.entries:
        if entry.lowrank is not None and not entry.scheme.is_int:
            raise InputError(f"{entry.name}: LQER factors belong to int-quantized tensors, not {entry.scheme.label}; "
                             "drop them or quantize the tensor to integers")
    version = format_version(model)
    streams = section_streams(model)
    sections, payload = [], []
    for name in sections_of_version(version):
        used, stored = encode_section(name, streams[name], codec, model)
        sections.append({"name": name, "codec": used, "raw_bytes": len(streams[name]), "stored_bytes": len(stored)})
        payload.append(stored)
    payload_bytes = b"".join(payload)
    header = {
        "format": FORMAT_NAME,
        "codec": codec,
        "policy": model.policy.to_json(),
        "tensors": [e.header_json() for e in model.entries],
        "banks": [b.to_json() for b in model.banks],
        "dropped": list(model.dropped),
        "sections": sections,
        "payload_bytes": len(payload_bytes),
        "payload_sha256": hashlib.sha256(payload_bytes).hexdigest(),
        "meta": model.meta,
    }
    header_block = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    data = PREAMBLE.pack(MAGIC, version, len(header_block)) + header_block + payload_bytes
    return PackedArtifact(data, header, model)


def pack_state_dict(state_dict: Mapping[str, torch.Tensor], policy: Policy | None = None,
                    codec: str = DEFAULT_CODEC, user_rules: UserRules | None = None,
                    meta: Mapping[str, Any] | None = None,
                    precomputed: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> PackedArtifact:
    """Quantize + encode in one call (in memory; write with `write_artifact`)."""
    return encode_artifact(quantize_state_dict(state_dict, policy, user_rules, meta, precomputed), codec)


def write_artifact(path: str | Path, packed: PackedArtifact) -> Path:
    return atomic_write_bytes(path, packed.data)
