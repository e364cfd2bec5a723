"""The `.akit` artifact format: quantize a state dict under a policy, encode it, and
read it back safely. No pickle anywhere.

Layout (all integers little-endian):

    magic     8 bytes  b"AKIT\\r\\n\\x1a\\n"  (PNG-style: catches text-mode mangling)
    version   u16      FORMAT_VERSION
    hlen      u32      length of the header block
    header    hlen     zlib-compressed UTF-8 JSON (sorted keys, compact)
    payload   ...      the sections, concatenated in header order, nothing else

The header names every tensor (shape, original dtype, category, scheme, bits, clip),
the policy, the bank records needed to restore banks, the dropped tensor names, and
each section's codec, raw size and stored size, plus the sha256 of the payload.
Sections hold tensor data sequentially in header tensor order:

    codes   int8 codes of every int-quantized tensor, row-major
    scales  their float16 row scales, byte-split (all low bytes, then all high bytes)
    half    float16 tensors, byte-split the same way
    fp32    float32 tensors, little-endian
    raw     non-float tensors in their own dtype, little-endian

Readers check the magic, version, header size, payload length (no holes, no trailing
bytes), the sha256, that every section's declared raw size equals what the tensor list
implies, and decompress with that bound, so a hostile header cannot make us allocate
more than the shapes it declares -- and those are capped too.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifactkit import codecs
from artifactkit.banks import BankRecord, expand_banks, restore_banks
from artifactkit.classify import Classification, UserRules, classify_state_dict
from artifactkit.errors import InputError
from artifactkit.io import atomic_write_bytes
from artifactkit.policy import Policy, Scheme, default_policy
from artifactkit.quant import QuantizedTensor, quantize, relative_rms_error

MAGIC = b"AKIT\r\n\x1a\n"
FORMAT_VERSION = 1
FORMAT_NAME = "akit/1"
PREAMBLE = struct.Struct("<8sHI")
MAX_HEADER_BYTES = 64 << 20
MAX_TOTAL_ELEMENTS = 1 << 34  # 16 G elements: far above any budgeted model, far below a bomb
SECTIONS = ("codes", "scales", "half", "fp32", "raw")
ANS_SIDE_CODECS = ("lzma", "zlib")  # for the sections that are not int codes, under `ans`
DEFAULT_CODEC = "ans"  # measured smallest and fastest: reports/pack_benchmark.md

RAW_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "int64": (torch.int64, "<i8"), "int32": (torch.int32, "<i4"), "int16": (torch.int16, "<i2"),
    "int8": (torch.int8, "i1"), "uint8": (torch.uint8, "u1"), "bool": (torch.bool, "u1"),
}
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- quantize


@dataclass
class QuantEntry:
    """One shipped tensor after quantization, before encoding."""

    name: str
    category: str
    scheme: Scheme
    reason: str
    shape: tuple[int, ...]
    dtype: str  # original dtype, restored on unpack
    quantized: QuantizedTensor | None = None  # int schemes
    values: torch.Tensor | None = None  # fp16 / fp32 / raw schemes, already in stored dtype
    rel_error: float | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def header_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "category": self.category, "scheme": self.scheme.kind,
                               "shape": list(self.shape), "dtype": self.dtype}
        if self.scheme.kind == "int":
            out["bits"] = self.scheme.bits
            out["clip"] = self.scheme.clip
        return out


@dataclass
class QuantizedModel:
    entries: list[QuantEntry]
    dropped: list[str]
    banks: list[BankRecord]
    policy: Policy
    classification: Classification
    meta: dict[str, Any] = field(default_factory=dict)

    def subset(self, keep: Callable[[QuantEntry], bool]) -> QuantizedModel:
        """A copy with only some entries (for measuring the bytes a group costs)."""
        return QuantizedModel([e for e in self.entries if keep(e)], [], [], self.policy, self.classification, {})


def quantize_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    policy: Policy | None = None,
    user_rules: UserRules | None = None,
    meta: Mapping[str, Any] | None = None,
    precomputed: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Expand banks, classify, and apply the policy to every tensor.

    `precomputed` maps expanded names to (codes, scales) produced elsewhere (GPTQ);
    those tensors keep the policy's scheme but skip round-to-nearest.
    """
    policy = policy or default_policy()
    expanded, banks = expand_banks(state_dict)
    classification = classify_state_dict(expanded, user_rules, policy.small_threshold)
    entries: list[QuantEntry] = []
    dropped: list[str] = []
    for info in classification.tensors:
        tensor = expanded[info.name].detach().cpu()
        scheme, reason = policy.scheme_for(info.name, info.category, tensor)
        if scheme.kind == "drop":
            dropped.append(info.name)
            continue
        entry = QuantEntry(info.name, info.category, scheme, reason, tuple(tensor.shape), dtype_name(tensor.dtype))
        if scheme.kind == "int":
            if progress:
                progress(info.name)
            if precomputed and info.name in precomputed:
                codes, scales = precomputed[info.name]
                entry.quantized = QuantizedTensor(codes.to(torch.int8).reshape(tensor.shape[0], -1).contiguous(),
                                                  scales.to(torch.float16).contiguous(), int(scheme.bits),
                                                  tuple(tensor.shape))
                entry.reason += " (GPTQ)"
            else:
                entry.quantized = quantize(tensor, int(scheme.bits), str(scheme.clip))
            entry.rel_error = relative_rms_error(tensor, entry.quantized.dequantize())
        elif scheme.kind == "fp16":
            entry.values = tensor.to(torch.float16).contiguous()
            entry.rel_error = relative_rms_error(tensor, entry.values)
        elif scheme.kind == "fp32":
            entry.values = tensor.to(torch.float32).contiguous()
            entry.rel_error = relative_rms_error(tensor, entry.values) if tensor.dtype == torch.float64 else 0.0
        else:  # raw
            if entry.dtype not in RAW_DTYPES:
                raise InputError(f"{info.name}: dtype {entry.dtype} cannot be stored; cast it to a supported dtype")
            entry.values = tensor.contiguous()
        entries.append(entry)
    clean_meta = {k: v for k, v in (meta or {}).items() if v is not None}
    return QuantizedModel(entries, dropped, banks, policy, classification, clean_meta)


# --------------------------------------------------------------------------- encode


def byte_split(values: np.ndarray) -> bytes:
    """fp16 values -> all low bytes, then all high bytes (compresses ~6% better)."""
    raw = values.astype("<f2").view(np.uint8).reshape(-1, 2)
    return raw[:, 0].tobytes() + raw[:, 1].tobytes()


def byte_join(data: bytes, count: int) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.uint8)
    joined = np.empty((count, 2), dtype=np.uint8)
    joined[:, 0], joined[:, 1] = array[:count], array[count:]
    return joined.reshape(-1).view("<f2")


def section_streams(model: QuantizedModel) -> dict[str, bytes]:
    """The uncompressed bytes of every section, in the documented layout."""
    codes, scales, half, fp32, raw = [], [], [], [], []
    for entry in model.entries:
        if entry.scheme.kind == "int":
            codes.append(entry.quantized.codes.numpy().reshape(-1))
            scales.append(entry.quantized.scales.numpy().reshape(-1))
        elif entry.scheme.kind == "fp16":
            half.append(entry.values.numpy().reshape(-1))
        elif entry.scheme.kind == "fp32":
            fp32.append(entry.values.numpy().reshape(-1).astype("<f4"))
        else:
            numpy_dtype = RAW_DTYPES[entry.dtype][1]
            raw.append(entry.values.to(torch.uint8 if entry.dtype == "bool" else entry.values.dtype)
                       .numpy().reshape(-1).astype(numpy_dtype).view(np.uint8))

    def cat(parts: list[np.ndarray], dtype: str) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    return {
        "codes": cat(codes, "i1").astype(np.int8).tobytes(),
        "scales": byte_split(cat(scales, "<f2")),
        "half": byte_split(cat(half, "<f2")),
        "fp32": cat(fp32, "<f4").tobytes(),
        "raw": cat(raw, "u1").tobytes(),
    }


@dataclass
class PackedArtifact:
    data: bytes
    header: dict[str, Any]
    model: QuantizedModel

    @property
    def artifact_bytes(self) -> int:
        return len(self.data)


def _encode_section(name: str, stream: bytes, codec: str, model: QuantizedModel) -> tuple[str, bytes]:
    if codec == "ans":
        if name != "codes":
            # Scales and small tensors are a few hundred KB, so trying codecs is cheap. Only
            # standard-library ones: the exported loader then needs numpy + torch + stdlib.
            return min((_encode_section(name, stream, side, model) for side in ANS_SIDE_CODECS),
                       key=lambda result: len(result[1]))
        from artifactkit import ans

        int_entries = [e for e in model.entries if e.scheme.kind == "int"]
        blob = ans.encode_codes([e.quantized.codes.numpy() for e in int_entries],
                                [e.quantized.scales.numpy() for e in int_entries],
                                [int(e.scheme.bits) for e in int_entries])
        return "ans", blob
    if codec == "auto":
        candidates = list(codecs.GENERAL_CODECS) + (["ans"] if name == "codes" and _ans_available() else [])
        best: tuple[str, bytes] | None = None
        for candidate in candidates:
            result = _encode_section(name, stream, candidate, model)
            if best is None or len(result[1]) < len(best[1]):
                best = result
        return best
    if not stream:
        return "raw", b""
    return codec, codecs.compress(codec, stream)


def _ans_available() -> bool:
    try:
        from artifactkit import ans  # noqa: F401
    except ImportError:
        return False
    return True


def encode_artifact(model: QuantizedModel, codec: str = DEFAULT_CODEC) -> PackedArtifact:
    if codec not in ("auto", "ans"):
        codecs.get_codec(codec)
    elif codec == "ans" and not _ans_available():
        raise InputError("codec 'ans': the entropy coder is not available in this build; use --codec lzma")
    streams = section_streams(model)
    sections, payload = [], []
    for name in SECTIONS:
        used, stored = _encode_section(name, streams[name], codec, model)
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
    data = PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_block)) + header_block + payload_bytes
    return PackedArtifact(data, header, model)


def pack_state_dict(state_dict: Mapping[str, torch.Tensor], policy: Policy | None = None,
                    codec: str = DEFAULT_CODEC, user_rules: UserRules | None = None,
                    meta: Mapping[str, Any] | None = None,
                    precomputed: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> PackedArtifact:
    """Quantize + encode in one call (in memory; write with `write_artifact`)."""
    return encode_artifact(quantize_state_dict(state_dict, policy, user_rules, meta, precomputed), codec)


def write_artifact(path: str | Path, packed: PackedArtifact) -> Path:
    return atomic_write_bytes(path, packed.data)


# --------------------------------------------------------------------------- read


def _require(condition: bool, where: str, cause: str) -> None:
    if not condition:
        raise InputError(f"{where}: {cause}; the artifact is damaged or not an .akit file, re-create it with 'artifactkit pack'")


def _section_sizes(tensors: list[dict[str, Any]], where: str) -> dict[str, int]:
    """Raw bytes each section must hold, computed from the tensor list alone."""
    sizes = dict.fromkeys(SECTIONS, 0)
    total = 0
    for index, tensor in enumerate(tensors):
        _require(isinstance(tensor, dict) and isinstance(tensor.get("name"), str), where, f"tensor #{index} has no name")
        shape = tensor.get("shape")
        _require(isinstance(shape, list) and all(isinstance(d, int) and 0 <= d < 2**40 for d in shape), where,
                 f"tensor {tensor['name']!r} has an invalid shape {shape!r}")
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        total += numel
        _require(total <= MAX_TOTAL_ELEMENTS, where, "the tensor shapes add up to an implausible size")
        scheme = tensor.get("scheme")
        if scheme == "int":
            bits = tensor.get("bits")
            _require(isinstance(bits, int) and 2 <= bits <= 8 and len(shape) >= 2, where,
                     f"tensor {tensor['name']!r} has an invalid int scheme")
            sizes["codes"] += numel
            sizes["scales"] += 2 * shape[0]
        elif scheme == "fp16":
            sizes["half"] += 2 * numel
        elif scheme == "fp32":
            sizes["fp32"] += 4 * numel
        elif scheme == "raw":
            _require(tensor.get("dtype") in RAW_DTYPES, where, f"tensor {tensor['name']!r} has an unknown raw dtype")
            sizes["raw"] += numel * np.dtype(RAW_DTYPES[tensor["dtype"]][1]).itemsize
        else:
            _require(False, where, f"tensor {tensor['name']!r} has an unknown scheme {scheme!r}")
        if scheme != "raw":
            _require(tensor.get("dtype") in FLOAT_DTYPES, where, f"tensor {tensor['name']!r} has an unknown dtype")
    return sizes


@dataclass
class ArtifactTensor:
    """One tensor as stored: what inspect shows and unpack restores."""

    name: str
    category: str
    scheme: str
    bits: int | None
    shape: tuple[int, ...]
    dtype: str
    clip: str | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def label(self) -> str:
        return f"int{self.bits}" if self.scheme == "int" else self.scheme


class ArtifactReader:
    """A validated `.akit` file. Sections are decoded on first use."""

    def __init__(self, data: bytes, where: str = "<bytes>") -> None:
        self.where = where
        self.data = data
        _require(len(data) >= PREAMBLE.size, where, f"file is {len(data)} bytes, shorter than the {PREAMBLE.size}-byte preamble")
        magic, version, header_len = PREAMBLE.unpack_from(data)
        if magic != MAGIC:
            raise InputError(f"{where}: not an .akit artifact (bad magic {magic[:8]!r}); "
                             "pass a file written by 'artifactkit pack' (legacy .ptz files are detected by content)")
        if version != FORMAT_VERSION:
            raise InputError(f"{where}: artifact format version {version} is not supported (this artifactkit reads "
                             f"version {FORMAT_VERSION}); upgrade artifactkit")
        _require(header_len <= MAX_HEADER_BYTES, where, f"header length {header_len} is implausible")
        _require(PREAMBLE.size + header_len <= len(data), where,
                 f"header declares {header_len} bytes but the file ends first (truncated)")
        block = data[PREAMBLE.size : PREAMBLE.size + header_len]
        try:
            decompressor = zlib.decompressobj()
            text = decompressor.decompress(block, MAX_HEADER_BYTES * 4)
            _require(decompressor.eof, where, "header block is truncated")
            header = json.loads(text)
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{where}: header is corrupt ({exc}); the file is damaged, re-create it") from exc
        _require(isinstance(header, dict) and header.get("format") == FORMAT_NAME, where, "header has no akit/1 format tag")
        for key in ("tensors", "sections", "payload_bytes", "payload_sha256", "banks", "dropped", "policy"):
            _require(key in header, where, f"header lacks '{key}'")
        self.header: dict[str, Any] = header
        self.payload_offset = PREAMBLE.size + header_len
        payload = memoryview(data)[self.payload_offset :]
        _require(len(payload) == header["payload_bytes"], where,
                 f"payload is {len(payload)} bytes but the header declares {header['payload_bytes']} "
                 f"({'truncated' if len(payload) < header['payload_bytes'] else 'trailing bytes'})")
        expected_raw = _section_sizes(header["tensors"], where)
        sections = header["sections"]
        _require(isinstance(sections, list) and [s.get("name") for s in sections] == list(SECTIONS), where,
                 "section table is malformed")
        offset = 0
        self.section_spans: dict[str, tuple[int, int, str, int]] = {}
        for section in sections:
            stored, raw = section.get("stored_bytes"), section.get("raw_bytes")
            _require(isinstance(stored, int) and stored >= 0 and isinstance(raw, int), where, "section sizes are malformed")
            _require(raw == expected_raw[section["name"]], where,
                     f"section '{section['name']}' declares {raw} raw bytes but its tensors need "
                     f"{expected_raw[section['name']]}")
            self.section_spans[section["name"]] = (offset, stored, str(section.get("codec")), raw)
            offset += stored
        _require(offset == len(payload), where, "section sizes do not add up to the payload size")
        digest = hashlib.sha256(payload).hexdigest()
        _require(digest == header["payload_sha256"], where, "payload sha256 does not match the header (corrupted bytes)")
        self.tensors = [ArtifactTensor(t["name"], str(t.get("category", "other")), t["scheme"], t.get("bits"),
                                       tuple(t["shape"]), t["dtype"], t.get("clip")) for t in header["tensors"]]
        self._decoded: dict[str, bytes] = {}
        self._codes_arrays: list[np.ndarray] | None = None

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
        return [t for t in self.tensors if t.scheme == "int"]

    def _scales(self) -> list[np.ndarray]:
        ints = self._int_tensors()
        total = sum(t.shape[0] for t in ints)
        flat = byte_join(self.section("scales"), total)
        out, position = [], 0
        for tensor in ints:
            out.append(flat[position : position + tensor.shape[0]])
            position += tensor.shape[0]
        return out

    def _decode_ans(self, blob: bytes) -> bytes:
        from artifactkit import ans

        ints = self._int_tensors()
        shapes = [(t.shape[0], t.numel // t.shape[0] if t.shape[0] else 0) for t in ints]
        arrays = ans.decode_codes(bytes(blob), shapes, self._scales(), [int(t.bits) for t in ints])
        return b"".join(np.ascontiguousarray(a, dtype=np.int8).tobytes() for a in arrays)

    # -- tensors
    def quantized(self) -> dict[str, QuantizedTensor]:
        """Codes and scales of every int tensor (what size reports and loaders need)."""
        codes = np.frombuffer(self.section("codes"), dtype=np.int8)
        result, position = {}, 0
        for tensor, scales in zip(self._int_tensors(), self._scales(), strict=True):
            rows = tensor.shape[0]
            block = codes[position : position + tensor.numel].reshape(rows, -1) if rows else codes[0:0].reshape(0, 0)
            position += tensor.numel
            result[tensor.name] = QuantizedTensor(torch.from_numpy(block.copy()), torch.from_numpy(scales.copy()),
                                                  int(tensor.bits), tensor.shape)
        return result

    def expanded_state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized tensors under their expanded (per-layer) names, original dtypes."""
        quantized = self.quantized() if any(t.scheme == "int" for t in self.tensors) else {}
        half = byte_join(self.section("half"), len(self.section("half")) // 2)
        fp32 = np.frombuffer(self.section("fp32"), dtype="<f4")
        raw = self.section("raw")
        positions = {"half": 0, "fp32": 0, "raw": 0}
        out: dict[str, torch.Tensor] = {}
        for tensor in self.tensors:
            count = tensor.numel
            if tensor.scheme == "int":
                value = quantized[tensor.name].dequantize(FLOAT_DTYPES[tensor.dtype])
            elif tensor.scheme == "fp16":
                start = positions["half"]
                value = torch.from_numpy(half[start : start + count].astype(np.float16).copy())
                positions["half"] += count
                value = value.reshape(tensor.shape).to(FLOAT_DTYPES[tensor.dtype])
            elif tensor.scheme == "fp32":
                start = positions["fp32"]
                value = torch.from_numpy(fp32[start : start + count].copy()).reshape(tensor.shape)
                positions["fp32"] += count
                value = value.to(FLOAT_DTYPES[tensor.dtype])
            else:
                torch_dtype, numpy_dtype = RAW_DTYPES[tensor.dtype]
                size = np.dtype(numpy_dtype).itemsize * count
                start = positions["raw"]
                array = np.frombuffer(raw[start : start + size], dtype=numpy_dtype).copy()
                positions["raw"] += size
                value = torch.from_numpy(array).reshape(tensor.shape)
                value = value.to(torch.bool) if tensor.dtype == "bool" else value.to(torch_dtype)
            out[tensor.name] = value
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized state dict with banks restored: what the model loads."""
        return restore_banks(self.expanded_state_dict(), self.banks)


def read_artifact(source: str | Path | bytes) -> ArtifactReader:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ArtifactReader(bytes(source))
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the .akit file")
    return ArtifactReader(path.read_bytes(), str(path))
