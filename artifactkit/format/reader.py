"""The `.akit` artifact format, reading side: one checked reader that every consumer
uses (inspect, check, unpack, size-report, roundtrip-eval, fit's verification).

Before anything is decoded, `artifactkit.format.validate` checks the whole structure:
magic, version, header, unique names, bank records against the tensor list, known
schemes / dtypes / codecs, that every section's declared raw size equals what the tensor
list implies, stored sizes that add up to the payload, the sha256, and the caps in
`artifactkit.format.limits`. Sections are then decompressed bounded by their declared
size, so a hostile header cannot make us allocate more than the shapes it declares --
and those are capped too. `validate()` decodes every section once (what `check` and
`inspect` run, so they never pass a file that `unpack` rejects). `iter_stored` walks the
stored tensors in header order; everything else is built on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from artifactkit.errors import InputError
from artifactkit.format import ans, codecs
from artifactkit.format.akit import BYTE_SPLIT_SECTIONS, FORMAT_NAME, byte_join
from artifactkit.format.validate import Span, check_ans_tables, check_header, parse_header, require
from artifactkit.io import MAX_ARTIFACT_FILE_BYTES, read_bounded
from artifactkit.plan.banks import BankRecord, restore_banks
from artifactkit.plan.classify import Classification
from artifactkit.plan.policy import Policy, Scheme
from artifactkit.plan.schemes import (
    FLOAT_DTYPES,
    LOWRANK,
    RAW_DTYPES,
    SECTIONS,
    STORAGE,
    SchemeKind,
    int_levels,
    numel_of,
    scheme_label,
    section_bytes,
)
from artifactkit.quantize.apply import QuantEntry, QuantizedModel
from artifactkit.quantize.intn import QuantizedTensor
from artifactkit.quantize.lqer import LowRankFactors


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
        self.version, header, self.payload_offset = parse_header(data, where)
        payload = memoryview(data)[self.payload_offset :]
        self.section_spans: dict[str, Span] = check_header(header, self.version, len(payload), where)
        digest = hashlib.sha256(payload).hexdigest()
        require(digest == header["payload_sha256"], where, "payload sha256 does not match the header (corrupted bytes)")
        self.header = header
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
        """A section's raw stream, decoded (bounded by its declared size) on first use."""
        if name not in self._decoded:
            offset, stored, codec, raw = self.section_spans[name]
            start = self.payload_offset + offset
            blob = self.data[start : start + stored]
            if codec == "ans":
                check_ans_tables(blob, f"{self.where} [{name}]")
                try:
                    decoded = self._decode_ans(blob)
                except InputError as exc:
                    raise InputError(f"{self.where}: {exc}") from exc
                require(len(decoded) == raw, self.where, f"section '{name}' decodes to {len(decoded):,} bytes, not {raw:,}")
                self._decoded[name] = decoded
            elif raw == 0 and stored == 0:
                self._decoded[name] = b""
            else:
                self._decoded[name] = codecs.decompress(codec, blob, raw, f"{self.where} [{name}]")
        return self._decoded[name]

    def validate(self) -> ArtifactReader:
        """Decode every section (each bounded by its declared size) and check the int
        codes lie within their bit width: after this, `state_dict()` cannot fail on
        the file's content. What `inspect` and `check` run, so OK means "loads"."""
        for name in self.section_spans:
            self.section(name)
        if self.section_spans["codes"].codec != "ans":  # the rANS decoder checks its own range
            codes, position = self._section_array("codes"), 0
            for tensor in self._int_tensors():
                chunk = codes[position : position + tensor.numel]
                position += tensor.numel
                levels = int_levels(int(tensor.bits))
                require(not chunk.size or -levels <= int(chunk.min()) <= int(chunk.max()) <= levels, self.where,
                        f"tensor {tensor.name!r} has codes outside the int{tensor.bits} range ±{levels}")
        return self

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
    """A validated reader over bytes or a file (read bounded: MAX_ARTIFACT_FILE_BYTES):
    structure checked and every section decoded once (`validate`), so what it returns loads."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ArtifactReader(bytes(source)).validate()
    data = read_bounded(source, MAX_ARTIFACT_FILE_BYTES, "an .akit artifact")
    return ArtifactReader(data, str(source)).validate()
