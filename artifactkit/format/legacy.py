"""Readers for the two quantized formats in the wild, detected by content, not name:

* the public baseline's `final_model.int8.ptz`: zlib of a `torch.save` dict with
  `"__quant_format__": "int8_clean_per_row_v1"` and keys `quantized`, `scales`,
  `dtypes`, `passthrough`, optional `qmeta`, `passthrough_orig_dtypes`;
* the seed's `final_model.int6.ptz`: lzma of `torch.save({"w": tensors, "m": meta})`
  where meta maps a name to `"pt"` / `"ctrl"` (passthrough, stored under the name) or
  `{"t": "i6"|"i8"}` (int8 codes under `name.q`, scale under `name.s`).

Both are unpickled with `weights_only=True` only (torch's warnings silenced), after a
decompression that stops at MAX_LEGACY_PAYLOAD_BYTES and a check that the payload is a
torch.save zip whose entries cannot inflate. Before anything is dequantized, every
entry is checked: codes are int8 with one scale per row (or one per tensor), restored
dtypes are float dtypes (a meta dtype of complex128 is refused), passthrough tensors
have dtypes an artifact can hold, and the totals stay under the caps in
`artifactkit.format.limits`.
"""

from __future__ import annotations

import hashlib
import lzma
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from artifactkit.checkpoint import check_torch_zip, torch_load_weights_only
from artifactkit.errors import InputError
from artifactkit.format.limits import (
    LZMA_MEMLIMIT,
    MAX_LEGACY_PAYLOAD_BYTES,
    MAX_RESTORED_BYTES,
    MAX_TOTAL_ELEMENTS,
)
from artifactkit.format.reader import ArtifactTensor
from artifactkit.plan.classify import classify_name
from artifactkit.plan.schemes import FLOAT_DTYPES, RAW_DTYPES, SchemeKind, dtype_name

BASELINE_FORMAT = "int8_clean_per_row_v1"
XZ_MAGIC = b"\xfd7zXZ\x00"
DAMAGED = "the file is damaged or not a legacy artifact"
STORABLE_DTYPES = {**{name: dtype for name, (dtype, _) in RAW_DTYPES.items()}, **FLOAT_DTYPES}


def looks_like_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0


def looks_like_legacy(data: bytes) -> bool:
    """Whether `data` starts the way a legacy file does (an xz or a zlib stream); only
    `read_legacy` can tell for sure."""
    return data.startswith(XZ_MAGIC) or looks_like_zlib(data)


def _bounded(decompressor: Any, data: bytes, where: str, codec: str) -> bytes | None:
    """The decompressed payload, stopping at MAX_LEGACY_PAYLOAD_BYTES; None when `data`
    is not a `codec` stream at all (for zlib, whose 2-byte signature is weak)."""
    try:
        out = decompressor.decompress(data, MAX_LEGACY_PAYLOAD_BYTES + 1)
    except (lzma.LZMAError, zlib.error) as exc:
        if codec == "zlib":
            return None
        raise InputError(f"{where}: {codec} stream is corrupt ({exc}); the file is damaged") from exc
    if len(out) > MAX_LEGACY_PAYLOAD_BYTES:
        raise InputError(f"{where}: decompresses to more than the {MAX_LEGACY_PAYLOAD_BYTES:,}-byte limit for a "
                         "legacy payload (a compression bomb, not a model artifact); refusing it")
    if not decompressor.eof:
        raise InputError(f"{where}: {codec} stream is truncated; the file is incomplete, copy it again")
    return out


def _torch_load_bytes(raw: bytes, where: str) -> Any:
    if not raw.startswith(b"PK"):
        raise InputError(f"{where}: the decompressed payload is not a torch.save zip archive; {DAMAGED}")
    check_torch_zip(raw, where, "legacy payload")
    return torch_load_weights_only(raw, where, "only plain tensor containers are read", "legacy payload")


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise InputError(f"{where}: a tensor name is a {type(name).__name__}, not a string; {DAMAGED}")
    return name


def _tensor(value: Any, where: str, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{where}: {what} is a {type(value).__name__}, not a tensor; {DAMAGED}")
    if dtype_name(value.dtype) not in STORABLE_DTYPES:
        raise InputError(f"{where}: {what} has dtype {dtype_name(value.dtype)}, which no model artifact holds; {DAMAGED}")
    return value


def _codes_and_scale(codes: Any, scale: Any, where: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes [rows, ...] and one float scale per row (or a single one)."""
    codes, scale = _tensor(codes, where, f"codes of {name!r}"), _tensor(scale, where, f"scale of {name!r}")
    rows = codes.shape[0] if codes.dim() else 0
    if codes.dtype != torch.int8 or not scale.is_floating_point() or scale.numel() not in (1, rows):
        raise InputError(f"{where}: tensor {name!r} has {dtype_name(codes.dtype)} codes {list(codes.shape)} and "
                         f"{dtype_name(scale.dtype)} scales {list(scale.shape)}, not int8 codes with one float scale "
                         f"per row; {DAMAGED}")
    return codes, scale


def _per_row(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    codes32 = codes.to(torch.float32)
    if scale.dim() == 0 or scale.numel() == 1:
        return codes32.mul_(float(scale.reshape(-1)[0]))
    return codes32.mul_(scale.to(torch.float32).reshape(codes.shape[0], *([1] * (codes.dim() - 1))))


def _to_dtype(name: Any, where: str, tensor: str, allowed: Mapping[str, torch.dtype] = FLOAT_DTYPES) -> torch.dtype | None:
    """The restored dtype a legacy file names (None: not named); only dtypes a model
    artifact restores are accepted."""
    if not name:
        return None
    text = str(name).removeprefix("torch.")
    if text not in allowed:
        raise InputError(f"{where}: tensor {tensor!r} asks to be restored as {text[:40]!r}, which is not one of "
                         f"{', '.join(allowed)}; {DAMAGED}")
    return allowed[text]


def _check_totals(tensors: list[tuple[torch.Tensor, torch.dtype]], where: str) -> None:
    """Elements and restored bytes under the caps, before anything is dequantized."""
    elements = sum(t.numel() for t, _ in tensors)
    restored = sum(t.numel() * dtype.itemsize for t, dtype in tensors)
    if elements > MAX_TOTAL_ELEMENTS or restored > MAX_RESTORED_BYTES:
        raise InputError(f"{where}: holds {elements:,} elements ({restored:,} bytes restored), over the limits "
                         f"({MAX_TOTAL_ELEMENTS:,} elements, {MAX_RESTORED_BYTES:,} bytes); not a model artifact")


@dataclass
class LegacyArtifact:
    """A legacy file, presented like an `.akit` reader: tensors, state_dict()."""

    format: str
    codec: str
    artifact_bytes: int
    payload_sha256: str
    tensors: list[ArtifactTensor]
    _state: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)
    policy_name: str | None = None
    header: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._state)

    expanded_state_dict = state_dict


def _entry(name: str, scheme: str, bits: int | None, tensor: torch.Tensor, dtype: str) -> ArtifactTensor:
    category = classify_name(name)[0]
    return ArtifactTensor(name, category, scheme, bits, tuple(tensor.shape), dtype)


# One checked tensor of a legacy file: (name, bits (None: passthrough), codes or the
# passthrough tensor, scale (None: passthrough), the dtype to restore).
_Planned = tuple[str, int | None, torch.Tensor, torch.Tensor | None, torch.dtype]


def _restore(plan: list[_Planned], where: str) -> tuple[list[ArtifactTensor], dict[str, torch.Tensor]]:
    """Every planned tensor restored (codes dequantized per row, passthrough cast to its
    restored dtype), after the totals are checked."""
    _check_totals([(tensor, target) for _, _, tensor, _, target in plan], where)
    tensors, state = [], {}
    for name, bits, tensor, scale, target in plan:
        if bits is not None:
            state[name] = _per_row(tensor, scale).to(target)
            tensors.append(_entry(name, SchemeKind.INT, bits, tensor, dtype_name(target)))
        else:
            state[name] = tensor.to(target)
            scheme = dtype_name(tensor.dtype) if tensor.is_floating_point() else "raw"
            tensors.append(_entry(name, scheme, None, tensor, dtype_name(target)))
    return tensors, state


def _read_baseline(obj: Mapping[str, Any], where: str) -> tuple[list[ArtifactTensor], dict[str, torch.Tensor]]:
    quantized, scales = obj.get("quantized") or {}, obj.get("scales") or {}
    dtypes, passthrough = obj.get("dtypes") or {}, obj.get("passthrough") or {}
    orig_dtypes = obj.get("passthrough_orig_dtypes") or {}
    if not all(isinstance(m, Mapping) for m in (quantized, scales, dtypes, passthrough, orig_dtypes)):
        raise InputError(f"{where}: {BASELINE_FORMAT} file lacks 'quantized'/'scales' dicts; the file is damaged")
    plan: list[_Planned] = []
    for name, codes in quantized.items():
        if _name(name, where) not in scales:
            raise InputError(f"{where}: tensor {name!r} has codes but no scale; the file is damaged")
        codes, scale = _codes_and_scale(codes, scales[name], where, name)
        plan.append((name, 8, codes, scale, _to_dtype(dtypes.get(name), where, name) or torch.float32))
    for name, tensor in passthrough.items():
        tensor = _tensor(tensor, where, f"passthrough tensor {_name(name, where)!r}")
        target = _to_dtype(orig_dtypes.get(name), where, name, STORABLE_DTYPES) or tensor.dtype
        plan.append((name, None, tensor, None, target))
    return _restore(plan, where)


def _read_seed(obj: Mapping[str, Any], where: str) -> tuple[list[ArtifactTensor], dict[str, torch.Tensor]]:
    weights, meta = obj["w"], obj["m"]
    if not isinstance(weights, Mapping) or not isinstance(meta, Mapping):
        raise InputError(f"{where}: seed int6 file lacks the 'w'/'m' dicts; the file is damaged")
    plan: list[_Planned] = []
    for name, info in meta.items():
        _name(name, where)
        if isinstance(info, Mapping) and info.get("t") in ("i6", "i8"):
            codes, scale = weights.get(f"{name}.q"), weights.get(f"{name}.s")
            if codes is None or scale is None:
                raise InputError(f"{where}: tensor {name!r} lacks '{name}.q' or '{name}.s'; the file is damaged")
            codes, scale = _codes_and_scale(codes, scale, where, name)
            target = _to_dtype(info.get("dtype"), where, name) or torch.float32
            plan.append((name, 6 if info["t"] == "i6" else 8, codes, scale, target))
        elif info in ("pt", "ctrl") or (isinstance(info, Mapping) and info.get("t") in ("pt", "ctrl")):
            if name not in weights:
                raise InputError(f"{where}: passthrough tensor {name!r} is missing; the file is damaged")
            tensor = _tensor(weights[name], where, f"passthrough tensor {name!r}")
            plan.append((name, None, tensor, None, tensor.dtype))
        else:
            raise InputError(f"{where}: unknown meta entry {str(info)[:60]!r} for {str(name)[:60]!r}; "
                             "not a seed int6 artifact")
    return _restore(plan, where)


def read_legacy(data: bytes, where: str) -> LegacyArtifact | None:
    """A LegacyArtifact when `data` is one of the legacy formats, else None."""
    if data.startswith(XZ_MAGIC):
        codec, raw = "lzma", _bounded(lzma.LZMADecompressor(memlimit=LZMA_MEMLIMIT), data, where, "lzma")
    elif looks_like_zlib(data):
        codec, raw = "zlib", _bounded(zlib.decompressobj(), data, where, "zlib")
    else:
        return None
    if raw is None:
        return None
    obj = _torch_load_bytes(raw, where)
    del raw
    if not isinstance(obj, Mapping):
        return None
    if obj.get("__quant_format__") == BASELINE_FORMAT:
        fmt, (tensors, state) = f"legacy:{BASELINE_FORMAT}", _read_baseline(obj, where)
    elif "__quant_format__" in obj:
        raise InputError(f"{where}: unknown __quant_format__ {obj['__quant_format__']!r}; "
                         f"artifactkit reads {BASELINE_FORMAT} and the seed int6 format")
    elif set(obj) == {"w", "m"}:
        fmt, (tensors, state) = "legacy:seed_int6", _read_seed(obj, where)
    else:
        return None
    return LegacyArtifact(fmt, codec, len(data), hashlib.sha256(data).hexdigest(), tensors, state)
