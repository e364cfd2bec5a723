"""Readers for the two quantized formats in the wild, detected by content, not name:

* the public baseline's `final_model.int8.ptz`: zlib of a `torch.save` dict with
  `"__quant_format__": "int8_clean_per_row_v1"` and keys `quantized`, `scales`,
  `dtypes`, `passthrough`, optional `qmeta`, `passthrough_orig_dtypes`;
* the seed's `final_model.int6.ptz`: lzma of `torch.save({"w": tensors, "m": meta})`
  where meta maps a name to `"pt"` / `"ctrl"` (passthrough, stored under the name) or
  `{"t": "i6"|"i8"}` (int8 codes under `name.q`, scale under `name.s`).

Both are unpickled with `weights_only=True` only, after a bounded decompression.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from artifactkit.errors import InputError
from artifactkit.format.reader import ArtifactTensor
from artifactkit.plan.classify import classify_name
from artifactkit.plan.schemes import SchemeKind, dtype_name

BASELINE_FORMAT = "int8_clean_per_row_v1"
MAX_LEGACY_BYTES = 4 << 30  # decompression bound: 4 GiB of torch.save data
XZ_MAGIC = b"\xfd7zXZ\x00"


def looks_like_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0


def _bounded(decompressor: Any, data: bytes, where: str, codec: str) -> bytes:
    try:
        out = decompressor.decompress(data, MAX_LEGACY_BYTES + 1)
    except (lzma.LZMAError, zlib.error) as exc:
        raise InputError(f"{where}: {codec} stream is corrupt ({exc}); the file is damaged") from exc
    if len(out) > MAX_LEGACY_BYTES:
        raise InputError(f"{where}: decompresses to more than {MAX_LEGACY_BYTES} bytes; refusing (not a model artifact)")
    if not decompressor.eof:
        raise InputError(f"{where}: {codec} stream is truncated; the file is incomplete, copy it again")
    return out


def _torch_load_bytes(raw: bytes, where: str) -> Any:
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{where}: refused: the payload needs more than weights_only unpickling; "
                         "only plain tensor containers are read") from exc
    except Exception as exc:
        raise InputError(f"{where}: the decompressed payload is not a torch.save file ({exc}); "
                         "the file is damaged or not a legacy artifact") from exc


def _per_row(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    codes32 = codes.to(torch.float32)
    if scale.dim() == 0 or scale.numel() == 1:
        return codes32 * float(scale.reshape(-1)[0])
    return codes32 * scale.to(torch.float32).reshape(codes.shape[0], *([1] * (codes.dim() - 1)))


def _to_dtype(name: str | None) -> torch.dtype | None:
    if not name:
        return None
    value = getattr(torch, str(name).removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else None


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


def _read_baseline(obj: Mapping[str, Any], where: str) -> tuple[list[ArtifactTensor], dict[str, torch.Tensor]]:
    quantized, scales = obj.get("quantized") or {}, obj.get("scales") or {}
    dtypes, passthrough = obj.get("dtypes") or {}, obj.get("passthrough") or {}
    orig_dtypes = obj.get("passthrough_orig_dtypes") or {}
    if not isinstance(quantized, Mapping) or not isinstance(scales, Mapping):
        raise InputError(f"{where}: {BASELINE_FORMAT} file lacks 'quantized'/'scales' dicts; the file is damaged")
    tensors, state = [], {}
    for name, codes in quantized.items():
        if name not in scales:
            raise InputError(f"{where}: tensor {name!r} has codes but no scale; the file is damaged")
        target = _to_dtype(dtypes.get(name)) or torch.float32
        state[name] = _per_row(codes, scales[name]).to(target)
        tensors.append(_entry(name, SchemeKind.INT, 8, codes, dtype_name(target)))
    for name, tensor in passthrough.items():
        target = _to_dtype(orig_dtypes.get(name)) or tensor.dtype
        state[name] = tensor.to(target)
        tensors.append(_entry(name, dtype_name(tensor.dtype) if tensor.is_floating_point() else "raw", None,
                              tensor, dtype_name(target)))
    return tensors, state


def _read_seed(obj: Mapping[str, Any], where: str) -> tuple[list[ArtifactTensor], dict[str, torch.Tensor]]:
    weights, meta = obj["w"], obj["m"]
    if not isinstance(weights, Mapping) or not isinstance(meta, Mapping):
        raise InputError(f"{where}: seed int6 file lacks the 'w'/'m' dicts; the file is damaged")
    tensors, state = [], {}
    for name, info in meta.items():
        if isinstance(info, Mapping) and info.get("t") in ("i6", "i8"):
            codes, scale = weights.get(f"{name}.q"), weights.get(f"{name}.s")
            if codes is None or scale is None:
                raise InputError(f"{where}: tensor {name!r} lacks '{name}.q' or '{name}.s'; the file is damaged")
            dtype = _to_dtype(info.get("dtype")) or torch.float32
            state[name] = _per_row(codes, scale).to(dtype)
            tensors.append(_entry(name, SchemeKind.INT, 6 if info["t"] == "i6" else 8, codes, dtype_name(dtype)))
        elif info in ("pt", "ctrl") or (isinstance(info, Mapping) and info.get("t") in ("pt", "ctrl")):
            if name not in weights:
                raise InputError(f"{where}: passthrough tensor {name!r} is missing; the file is damaged")
            tensor = weights[name]
            state[name] = tensor
            scheme = dtype_name(tensor.dtype) if tensor.is_floating_point() else "raw"
            tensors.append(_entry(name, scheme, None, tensor, dtype_name(tensor.dtype)))
        else:
            raise InputError(f"{where}: unknown meta entry {info!r} for {name!r}; not a seed int6 artifact")
    return tensors, state


def read_legacy(data: bytes, where: str) -> LegacyArtifact | None:
    """A LegacyArtifact when `data` is one of the legacy formats, else None."""
    if data.startswith(XZ_MAGIC):
        codec, raw = "lzma", _bounded(lzma.LZMADecompressor(), data, where, "lzma")
    elif looks_like_zlib(data):
        try:
            raw = _bounded(zlib.decompressobj(), data, where, "zlib")
        except InputError:
            return None
        codec = "zlib"
    else:
        return None
    obj = _torch_load_bytes(raw, where)
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
