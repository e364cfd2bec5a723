"""The `.akit` artifact format, reading side: one checked reader that every consumer
uses (inspect, check, unpack, size-report, roundtrip-eval, fit's verification).

Checks, before anything is decoded: the magic, version, header size, payload length (no
holes, no trailing bytes), the sha256, that every section's declared raw size equals
what the tensor list implies (`artifactkit.plan.schemes.section_bytes`), and the shapes'
total. Sections are then decompressed with that bound, so a hostile header cannot make
us allocate more than the shapes it declares -- and those are capped too.
`iter_stored` walks the stored tensors in header order; everything else is built on it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifactkit.errors import InputError
from artifactkit.format import ans, codecs
from artifactkit.format.akit import (
    BYTE_SPLIT_SECTIONS,
    FORMAT_NAME,
    LOWRANK_FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_TOTAL_ELEMENTS,
    PREAMBLE,
    byte_join,
    require,
)
from artifactkit.plan.banks import BankRecord, restore_banks
from artifactkit.plan.classify import Classification
from artifactkit.plan.policy import Policy, Scheme
from artifactkit.plan.schemes import (
    FLOAT_DTYPES,
    FORMAT_VERSIONS,
    LOWRANK,
    RAW_DTYPES,
    SECTIONS,
    STORAGE,
    SchemeKind,
    numel_of,
    parse_kind,
    scheme_label,
    section_bytes,
    sections_of_version,
    valid_bits,
    valid_lowrank,
)
from artifactkit.quantize.apply import QuantEntry, QuantizedModel
from artifactkit.quantize.intn import QuantizedTensor
from artifactkit.quantize.lqer import LowRankFactors


def _section_sizes(tensors: list[dict[str, Any]], where: str, version: int) -> dict[str, int]:
    """Raw bytes each section must hold, computed from the tensor list alone."""
    sizes = dict.fromkeys(SECTIONS, 0)
    total = 0
    for index, tensor in enumerate(tensors):
        require(isinstance(tensor, dict) and isinstance(tensor.get("name"), str), where, f"tensor #{index} has no name")
        shape = tensor.get("shape")
        require(isinstance(shape, list) and all(isinstance(d, int) and 0 <= d < 2**40 for d in shape), where,
                f"tensor {tensor['name']!r} has an invalid shape {shape!r}")
        total += numel_of(shape)
        require(total <= MAX_TOTAL_ELEMENTS, where, "the tensor shapes add up to an implausible size")
        kind = parse_kind(tensor.get("scheme"))
        require(kind is not None and kind is not SchemeKind.DROP, where,
                f"tensor {tensor['name']!r} has an unknown scheme {tensor.get('scheme')!r}")
        if kind is SchemeKind.INT:
            require(valid_bits(tensor.get("bits")), where, f"tensor {tensor['name']!r} has an invalid int scheme")
        if STORAGE[kind].needs_matrix:
            require(len(shape) >= 2, where, f"tensor {tensor['name']!r} has an invalid int scheme")
        if kind is SchemeKind.RAW:
            require(tensor.get("dtype") in RAW_DTYPES, where, f"tensor {tensor['name']!r} has an unknown raw dtype")
        else:
            require(tensor.get("dtype") in FLOAT_DTYPES, where, f"tensor {tensor['name']!r} has an unknown dtype")
        lowrank = tensor.get("lowrank")
        if lowrank is not None:
            require(version >= LOWRANK_FORMAT_VERSION and kind is SchemeKind.INT and valid_lowrank(lowrank, shape),
                    where, f"tensor {tensor['name']!r} has an invalid low-rank record {lowrank!r}")
        for section, size in section_bytes(kind, shape, tensor["dtype"], lowrank).items():
            sizes[section] += size
    return sizes


@dataclass
class ArtifactTensor:
    """One tensor as stored: what inspect shows and unpack restores."""

    name: str
    category: str
    scheme: SchemeKind
    bits: int | None
    shape: tuple[int, ...]
    dtype: str
    clip: str | None = None
    lowrank: dict[str, int] | None = None  # {"rank", "group"} of an int tensor's LQER factors

    @property
    def numel(self) -> int:
        return numel_of(self.shape)

    @property
    def label(self) -> str:
        return scheme_label(self.scheme, self.bits)

    @property
    def is_int(self) -> bool:
        return self.scheme is SchemeKind.INT


@dataclass
class StoredTensor:
    """One tensor as decoded from its sections, before dequantization: int codes and
    scales (`quantized`), or the values in their stored dtype (`values`)."""

    tensor: ArtifactTensor
    quantized: QuantizedTensor | None = None
    values: torch.Tensor | None = None
    lowrank: LowRankFactors | None = None

    def restored(self) -> torch.Tensor:
        """The tensor a model loads: dequantized (plus the LQER correction, in float32),
        in its original dtype and shape."""
        dtype = FLOAT_DTYPES.get(self.tensor.dtype)
        if self.quantized is not None and self.lowrank is not None:
            rows = self.quantized.shape[0]
            corrected = self.quantized.dequantize().reshape(rows, -1) + self.lowrank.correction()
            return corrected.reshape(self.tensor.shape).to(dtype)
        if self.quantized is not None:
            return self.quantized.dequantize(dtype)
        if self.tensor.scheme is SchemeKind.RAW:
            return self.values
        return self.values.to(dtype)


class ArtifactReader:
    """A validated `.akit` file. Sections are decoded on first use."""

    def __init__(self, data: bytes, where: str = "<bytes>") -> None:
        self.where = where
        self.data = data
        require(len(data) >= PREAMBLE.size, where, f"file is {len(data)} bytes, shorter than the {PREAMBLE.size}-byte preamble")
        magic, version, header_len = PREAMBLE.unpack_from(data)
        if magic != MAGIC:
            raise InputError(f"{where}: not an .akit artifact (bad magic {magic[:8]!r}); "
                             "pass a file written by 'artifactkit pack' (legacy .ptz files are detected by content)")
        if version not in FORMAT_VERSIONS:
            raise InputError(f"{where}: artifact format version {version} is not supported (this artifactkit reads "
                             f"versions {', '.join(map(str, FORMAT_VERSIONS))}); upgrade artifactkit")
        self.version = int(version)
        require(header_len <= MAX_HEADER_BYTES, where, f"header length {header_len} is implausible")
        require(PREAMBLE.size + header_len <= len(data), where,
                 f"header declares {header_len} bytes but the file ends first (truncated)")
        block = data[PREAMBLE.size : PREAMBLE.size + header_len]
        try:
            decompressor = zlib.decompressobj()
            text = decompressor.decompress(block, MAX_HEADER_BYTES * 4)
            require(decompressor.eof, where, "header block is truncated")
            header = json.loads(text)
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{where}: header is corrupt ({exc}); the file is damaged, re-create it") from exc
        require(isinstance(header, dict) and header.get("format") == FORMAT_NAME, where, "header has no akit/1 format tag")
        for key in ("tensors", "sections", "payload_bytes", "payload_sha256", "banks", "dropped", "policy"):
            require(key in header, where, f"header lacks '{key}'")
        self.header: dict[str, Any] = header
        self.payload_offset = PREAMBLE.size + header_len
        payload = memoryview(data)[self.payload_offset :]
        require(len(payload) == header["payload_bytes"], where,
                 f"payload is {len(payload)} bytes but the header declares {header['payload_bytes']} "
                 f"({'truncated' if len(payload) < header['payload_bytes'] else 'trailing bytes'})")
        expected_raw = _section_sizes(header["tensors"], where, self.version)
        sections = header["sections"]
        require(isinstance(sections, list) and all(isinstance(s, dict) for s in sections)
                and [s.get("name") for s in sections] == list(sections_of_version(self.version)), where,
                "section table is malformed")
        offset = 0
        self.section_spans: dict[str, tuple[int, int, str, int]] = {}
        for section in sections:
            stored, raw = section.get("stored_bytes"), section.get("raw_bytes")
            require(isinstance(stored, int) and stored >= 0 and isinstance(raw, int), where, "section sizes are malformed")
            require(raw == expected_raw[section["name"]], where,
                     f"section '{section['name']}' declares {raw} raw bytes but its tensors need "
                     f"{expected_raw[section['name']]}")
            self.section_spans[section["name"]] = (offset, stored, str(section.get("codec")), raw)
            offset += stored
        require(offset == len(payload), where, "section sizes do not add up to the payload size")
        digest = hashlib.sha256(payload).hexdigest()
        require(digest == header["payload_sha256"], where, "payload sha256 does not match the header (corrupted bytes)")
        self.tensors = [ArtifactTensor(t["name"], str(t.get("category", "other")), SchemeKind(t["scheme"]),
                                       t.get("bits"), tuple(t["shape"]), t["dtype"], t.get("clip"), t.get("lowrank"))
                        for t in header["tensors"]]
        self._decoded: dict[str, bytes] = {}

    # -- metadata
    @property
    def artifact_bytes(self) -> int:
        return len(self.data)

    @property
    def format(self) -> str:
        return FORMAT_NAME

    @property
    def payload_sha256(self) -> str:
        return str(self.header["payload_sha256"])

    @property
    def policy_name(self) -> str:
        return str(self.header["policy"].get("name"))

    @property
    def dropped(self) -> list[str]:
        return list(self.header["dropped"])

    @property
    def codec(self) -> str:
        return str(self.header.get("codec"))

    @property
    def banks(self) -> list[BankRecord]:
        return [BankRecord.from_json(b) for b in self.header["banks"]]

    # -- sections
    def section(self, name: str) -> bytes:
        if name not in self._decoded:
            offset, stored, codec, raw = self.section_spans[name]
            start = self.payload_offset + offset
            blob = self.data[start : start + stored]
            if codec == "ans":
                try:
                    self._decoded[name] = self._decode_ans(blob)
                except InputError as exc:
                    raise InputError(f"{self.where}: {exc}") from exc
            elif raw == 0 and stored == 0:
                self._decoded[name] = b""
            else:
                self._decoded[name] = codecs.decompress(codec, blob, raw, f"{self.where} [{name}]")
        return self._decoded[name]

    def _int_tensors(self) -> list[ArtifactTensor]:
        return [t for t in self.tensors if t.is_int]

    def _scales(self) -> list[np.ndarray]:
        ints = self._int_tensors()
        flat = byte_join(self.section("scales"), sum(t.shape[0] for t in ints))
        ends = np.cumsum([t.shape[0] for t in ints])[:-1]
        return np.split(flat, ends) if ints else []

    def _decode_ans(self, blob: bytes) -> bytes:
        ints = self._int_tensors()
        shapes = [(t.shape[0], t.numel // t.shape[0] if t.shape[0] else 0) for t in ints]
        arrays = ans.decode_codes(bytes(blob), shapes, self._scales(), [int(t.bits) for t in ints])
        return b"".join(np.ascontiguousarray(a, dtype=np.int8).tobytes() for a in arrays)

    def _section_array(self, name: str) -> np.ndarray:
        """A section's raw stream as its elements (SECTION_TABLE): int8 codes, float16
        values (byte-joined), float32 values, or raw bytes."""
        data = self.section(name)
        if name in BYTE_SPLIT_SECTIONS:
            return byte_join(data, len(data) // 2)
        return np.frombuffer(data, dtype={"codes": np.int8, "lowrank_codes": np.int8, "fp32": "<f4"}.get(name, np.uint8))

    # -- tensors
    def iter_stored(self) -> Iterator[StoredTensor]:
        """Every stored tensor in header order, each section read sequentially (the
        layout in `artifactkit.plan.schemes`): the one walk every consumer shares."""
        used = {section for t in self.tensors for section in section_bytes(t.scheme, t.shape, t.dtype, t.lowrank)}
        arrays = {name: self._section_array(name) for name in SECTIONS if name in used}
        position = dict.fromkeys(SECTIONS, 0)

        def take(section: str, count: int) -> np.ndarray:
            start = position[section]
            position[section] += count
            return arrays[section][start : start + count].copy()

        for tensor in self.tensors:
            storage = STORAGE[tensor.scheme]
            if tensor.is_int:
                rows = tensor.shape[0]
                codes = take(storage.section, tensor.numel).reshape(rows, -1) if rows else np.zeros((0, 0), np.int8)
                scales = take(storage.row_section, rows)
                quantized = QuantizedTensor(torch.from_numpy(codes), torch.from_numpy(scales), int(tensor.bits),
                                            tensor.shape)
                yield StoredTensor(tensor, quantized=quantized, lowrank=self._lowrank(tensor, take))
            elif tensor.scheme is SchemeKind.RAW:
                torch_dtype, numpy_dtype = RAW_DTYPES[tensor.dtype]
                array = take(storage.section, tensor.numel * np.dtype(numpy_dtype).itemsize).view(numpy_dtype)
                value = torch.from_numpy(array).reshape(tensor.shape)
                yield StoredTensor(tensor, values=value.to(torch.bool) if tensor.dtype == "bool" else value.to(torch_dtype))
            else:
                values = take(storage.section, tensor.numel).reshape(tensor.shape)
                yield StoredTensor(tensor, values=torch.from_numpy(values))

    @staticmethod
    def _lowrank(tensor: ArtifactTensor, take: Callable[[str, int], np.ndarray]) -> LowRankFactors | None:
        """The LQER factors stored for `tensor` (A codes, B codes; A scale, B group scales)."""
        if tensor.lowrank is None:
            return None
        rank, group = tensor.lowrank["rank"], tensor.lowrank["group"]
        rows, cols = tensor.shape[0], tensor.numel // tensor.shape[0]
        a_codes = take(LOWRANK.codes_section, rows * rank).reshape(rows, rank)
        b_codes = take(LOWRANK.codes_section, rank * cols).reshape(rank, cols)
        a_scale = take(LOWRANK.scales_section, 1)
        b_scales = take(LOWRANK.scales_section, rank * cols // group)
        return LowRankFactors(torch.from_numpy(a_codes), torch.from_numpy(a_scale), torch.from_numpy(b_codes),
                              torch.from_numpy(b_scales), group)

    def quantized(self) -> dict[str, QuantizedTensor]:
        """Codes and scales of every int tensor (what size reports and loaders need)."""
        return {stored.tensor.name: stored.quantized for stored in self.iter_stored() if stored.quantized is not None}

    def expanded_state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized tensors under their expanded (per-layer) names, original dtypes."""
        return {stored.tensor.name: stored.restored() for stored in self.iter_stored()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized state dict with banks restored: what the model loads."""
        return restore_banks(self.expanded_state_dict(), self.banks)

    def quantized_model(self) -> QuantizedModel:
        """The QuantizedModel this artifact stores, rebuilt exactly from its sections
        (re-encoding it with the artifact's codecs gives the same sections)."""
        entries = []
        for stored in self.iter_stored():
            tensor = stored.tensor
            scheme = Scheme(tensor.scheme, tensor.bits, tensor.clip) if tensor.is_int else Scheme(tensor.scheme)
            entries.append(QuantEntry(tensor.name, tensor.category, scheme, "stored in the artifact", tensor.shape,
                                      tensor.dtype, quantized=stored.quantized, values=stored.values,
                                      lowrank=stored.lowrank))
        return QuantizedModel(entries, self.dropped, self.banks, Policy.from_json(self.header["policy"]),
                              Classification([]), dict(self.header.get("meta", {})))


def read_artifact(source: str | Path | bytes) -> ArtifactReader:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ArtifactReader(bytes(source))
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the .akit file")
    return ArtifactReader(path.read_bytes(), str(path))
