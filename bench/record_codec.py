"""The record pipeline's own codec, for the frontier benchmark only (never a runtime
dependency of artifactkit): what a leaderboard entry would ship for the same
`QuantizedModel`, encoded, decoded again and checked bit for bit, so its size is honest.

Two variants:

* `lrzip` (as issue 11 describes the leaders' codec): the int codes of every matrix with
  its rows reordered by similarity (greedy nearest neighbour on the code rows under the
  L1 distance, starting from row 0; the order is stored) and then transposed, all
  matrices concatenated and compressed by `lrzip -z -L 9` (ZPAQ); everything else
  (row scales, fp16 / fp32 / raw tensors, LQER factor codes and scales, the row orders,
  the JSON table of contents) byte-shuffled with stride 2 and compressed by brotli-11.
  lrzip is a Debian package (`apt-get install -y lrzip`); without it this variant is
  skipped with that reason.
* `brotli` (what the 04-29 record's `serialize` actually does: `torch.save` of the
  quantized tensors, byte-shuffled with stride 2, brotli-11): the same tensors in one
  stream, codes in their own order, shuffled and brotli-11 (raw arrays and a JSON table
  of contents instead of a pickle, a few KB apart).

Blob layout: magic `RCDC`, variant byte, u32 length of the lrzip part, the lrzip part,
the brotli part. Usage as a script (packs a checkpoint with the record recipe first):

    python bench/record_codec.py CKPT --calib 'data/train_*.bin' [--variant lrzip]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, installed or not

from artifactkit.io import atomic_write_bytes  # noqa: E402
from artifactkit.plan.banks import BankRecord, restore_banks  # noqa: E402
from artifactkit.plan.schemes import FLOAT_DTYPES, RAW_DTYPES, SchemeKind  # noqa: E402
from artifactkit.quantize.apply import QuantizedModel  # noqa: E402

MAGIC = b"RCDC"
VARIANTS = ("lrzip", "brotli")
VARIANT_IDS = {"lrzip": 1, "brotli": 2}
BROTLI_QUALITY = 11
LRZIP_COMMAND = ("lrzip", "-z", "-L", "9")
SHUFFLE_STRIDE = 2


class CodecUnavailable(RuntimeError):
    """A variant cannot run here (its tool is missing); the message says how to get it."""


def lrzip_missing() -> str | None:
    """Why the lrzip variant cannot run here, or None when it can."""
    if shutil.which("lrzip") is None:
        return "lrzip is not installed (benchmark-only tool: apt-get install -y lrzip)"
    return None


def _brotli():
    try:
        import brotli
    except ImportError as exc:  # the [dev] / [brotli] extra
        raise CodecUnavailable("the brotli module is missing; pip install brotli") from exc
    return brotli


# --------------------------------------------------------------------------- transforms


def byte_shuffle(data: bytes, stride: int = SHUFFLE_STRIDE) -> bytes:
    """Byte k of every `stride`-byte group first, as the record's `_byte_shuffle` (no magic)."""
    source = np.frombuffer(data, dtype=np.uint8)
    return b"".join(source[offset::stride].tobytes() for offset in range(stride))


def byte_unshuffle(data: bytes, stride: int = SHUFFLE_STRIDE) -> bytes:
    source = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(len(source), dtype=np.uint8)
    start = 0
    for offset in range(stride):
        count = len(range(offset, len(source), stride))
        out[offset::stride] = source[start : start + count]
        start += count
    return out.tobytes()


def similarity_order(codes: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour tour of the code rows (L1 distance), from row 0; ties go
    to the lower row index. Returns the row order (a permutation)."""
    rows = codes.shape[0]
    if rows <= 2:
        return np.arange(rows, dtype=np.int64)
    values = torch.from_numpy(codes.astype(np.float32))
    distances = torch.cdist(values, values, p=1)
    visited = torch.zeros(rows, dtype=torch.bool)
    order = [0]
    visited[0] = True
    current = 0
    for _ in range(rows - 1):
        row = distances[current].masked_fill(visited, float("inf"))
        current = int(torch.argmin(row))
        visited[current] = True
        order.append(current)
    return np.asarray(order, dtype=np.int64)


# --------------------------------------------------------------------------- model <-> parts


@dataclass
class Parts:
    """What a model is made of, as arrays in entry order (the thing compared after decoding)."""

    table: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]  # key "ENTRY/part" -> array
    banks: list[dict[str, Any]]

    def equal(self, other: Parts) -> bool:
        return (self.table == other.table and self.banks == other.banks
                and self.arrays.keys() == other.arrays.keys()
                and all(self.arrays[key].dtype == other.arrays[key].dtype
                        and np.array_equal(self.arrays[key], other.arrays[key]) for key in self.arrays))


def model_parts(model: QuantizedModel) -> Parts:
    table, arrays = [], {}
    for entry in model.entries:
        kind = entry.scheme.kind
        item: dict[str, Any] = {"name": entry.name, "kind": str(kind), "shape": list(entry.shape),
                                "dtype": entry.dtype}
        if kind is SchemeKind.INT:
            item["bits"] = int(entry.scheme.bits)
            arrays[f"{entry.name}/codes"] = entry.quantized.codes.numpy().astype(np.int8).reshape(entry.shape[0], -1)
            arrays[f"{entry.name}/scales"] = entry.quantized.scales.numpy().astype("<f2")
            if entry.lowrank is not None:
                factors = entry.lowrank
                item["lowrank"] = {"rank": factors.rank, "group": factors.group}
                arrays[f"{entry.name}/lqer_a"] = factors.a_codes.numpy().astype(np.int8)
                arrays[f"{entry.name}/lqer_a_scale"] = factors.a_scale.numpy().astype("<f2")
                arrays[f"{entry.name}/lqer_b"] = factors.b_codes.numpy().astype(np.int8)
                arrays[f"{entry.name}/lqer_b_scales"] = factors.b_scales.numpy().astype("<f2")
        elif kind is SchemeKind.RAW:
            values = entry.values.to(torch.uint8) if entry.dtype == "bool" else entry.values
            arrays[f"{entry.name}/values"] = values.numpy().astype(RAW_DTYPES[entry.dtype][1]).reshape(-1)
        else:
            arrays[f"{entry.name}/values"] = entry.values.numpy().astype("<f2" if kind is SchemeKind.FP16 else "<f4")
        table.append(item)
    return Parts(table, arrays, [bank.to_json() for bank in model.banks])


def parts_state_dict(parts: Parts) -> dict[str, torch.Tensor]:
    """What the record's loader makes of decoded parts (its `dequantize_mixed`, written
    here on its own): codes * row scale in float32, plus A_hat @ B_hat where LQER factors
    exist, cast to the original dtype; fp16 passthrough cast back; banks restored."""
    expanded: dict[str, torch.Tensor] = {}
    for item in parts.table:
        name, dtype = item["name"], FLOAT_DTYPES.get(item["dtype"])
        arrays = {key.split("/", 1)[1]: value for key, value in parts.arrays.items() if key.split("/", 1)[0] == name}
        if item["kind"] == "int":
            weight = torch.from_numpy(arrays["codes"]).float() * torch.from_numpy(arrays["scales"]).float()[:, None]
            if "lowrank" in item:
                group = int(item["lowrank"]["group"])
                a_hat = torch.from_numpy(arrays["lqer_a"]).float() * float(arrays["lqer_a_scale"][0])
                b_codes = torch.from_numpy(arrays["lqer_b"])
                b_hat = (b_codes.reshape(-1, group).float()
                         * torch.from_numpy(arrays["lqer_b_scales"]).float()[:, None]).reshape(b_codes.shape)
                weight = weight + a_hat @ b_hat
            expanded[name] = weight.reshape(item["shape"]).to(dtype)
        elif item["kind"] == "raw":
            raw_dtype = RAW_DTYPES[item["dtype"]][0]
            values = torch.from_numpy(arrays["values"].copy()).reshape(item["shape"])
            expanded[name] = values.to(torch.bool) if raw_dtype is torch.bool else values.view(raw_dtype)
        else:
            expanded[name] = torch.from_numpy(arrays["values"]).reshape(item["shape"]).to(dtype)
    return restore_banks(expanded, [BankRecord.from_json(bank) for bank in parts.banks])


def _describe(arrays: dict[str, np.ndarray]) -> list[list[Any]]:
    return [[key, array.dtype.str, list(array.shape)] for key, array in arrays.items()]


def _pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(array).tobytes() for array in arrays.values())


def _unpack_arrays(layout: list[list[Any]], data: bytes) -> dict[str, np.ndarray]:
    arrays, offset = {}, 0
    for key, dtype, shape in layout:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = count * np.dtype(dtype).itemsize
        arrays[key] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
        offset += size
    if offset != len(data):
        raise ValueError(f"record codec: {len(data) - offset} trailing bytes after the arrays")
    return arrays


def _with_table(document: dict[str, Any], binary: bytes) -> bytes:
    text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<I", len(text)) + text + binary


def _split_table(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack_from("<I", data)
    return json.loads(data[4 : 4 + length]), data[4 + length :]


# --------------------------------------------------------------------------- lrzip


def _lrzip(data: bytes, decompress: bool) -> bytes:
    missing = lrzip_missing()
    if missing:
        raise CodecUnavailable(missing)
    with tempfile.TemporaryDirectory(prefix="record-codec-") as work:
        source = Path(work) / ("in.lrz" if decompress else "in.bin")
        target = Path(work) / "out"
        source.write_bytes(data)
        # -N 0: lrzip renices itself to 19 by default; -p 1: one thread, so the output
        # does not depend on the machine; LRZIP=NOCONFIG: no /etc/lrzip.conf overrides.
        command = ["lrzip", "-d"] if decompress else list(LRZIP_COMMAND)
        command += ["-q", "-f", "-N", "0", "-p", "1", "-o", str(target), str(source)]
        environment = {**os.environ, "LRZIP": "NOCONFIG"}
        result = subprocess.run(command, capture_output=True, env=environment, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace')[-500:]}")
        return target.read_bytes()


# --------------------------------------------------------------------------- encode / decode


def encode(model: QuantizedModel, variant: str = "lrzip") -> bytes:
    """The blob a record submission would ship for `model` (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"record codec: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    parts = model_parts(model)
    brotli = _brotli()
    document = {"table": parts.table, "banks": parts.banks}
    if variant == "brotli":
        document["layout"] = _describe(parts.arrays)
        rest = _with_table(document, _pack_arrays(parts.arrays))
        return MAGIC + bytes([VARIANT_IDS[variant]]) + struct.pack("<I", 0) + brotli.compress(
            byte_shuffle(rest), quality=BROTLI_QUALITY)
    code_streams, side = [], {}
    for key, array in parts.arrays.items():
        if key.endswith("/codes"):
            order = similarity_order(array)
            side[key.replace("/codes", "/row_order")] = order.astype("<u2" if array.shape[0] <= 1 << 16 else "<u4")
            code_streams.append(np.ascontiguousarray(array[order].T).tobytes())
        else:
            side[key] = array
    document["layout"] = _describe(side)
    document["codes"] = [[key, list(array.shape)] for key, array in parts.arrays.items() if key.endswith("/codes")]
    codes_blob = _lrzip(b"".join(code_streams), decompress=False)
    rest_blob = brotli.compress(byte_shuffle(_with_table(document, _pack_arrays(side))), quality=BROTLI_QUALITY)
    return MAGIC + bytes([VARIANT_IDS[variant]]) + struct.pack("<I", len(codes_blob)) + codes_blob + rest_blob


def decode(blob: bytes) -> Parts:
    """Everything `encode` stored, back as arrays (codes in their original row order)."""
    if blob[:4] != MAGIC:
        raise ValueError("record codec: bad magic")
    variant = {number: name for name, number in VARIANT_IDS.items()}[blob[4]]
    (codes_length,) = struct.unpack_from("<I", blob, 5)
    codes_blob, rest_blob = blob[9 : 9 + codes_length], blob[9 + codes_length :]
    document, binary = _split_table(byte_unshuffle(_brotli().decompress(rest_blob)))
    arrays = _unpack_arrays(document["layout"], binary)
    if variant == "brotli":
        return Parts(document["table"], arrays, document["banks"])
    codes_data = _lrzip(codes_blob, decompress=True)
    restored: dict[str, np.ndarray] = {}
    offset = 0
    codes = {}
    for key, (rows, cols) in document["codes"]:
        size = rows * cols
        transposed = np.frombuffer(codes_data, dtype=np.int8, count=size, offset=offset).reshape(cols, rows)
        offset += size
        order = arrays.pop(key.replace("/codes", "/row_order")).astype(np.int64)
        matrix = np.empty((rows, cols), dtype=np.int8)
        matrix[order] = transposed.T
        codes[key] = matrix
    if offset != len(codes_data):
        raise ValueError("record codec: the codes stream has trailing bytes")
    # Back into the order model_parts produced, so Parts.equal compares like with like.
    for item in document["table"]:
        name = item["name"]
        for suffix in ("codes", "scales", "lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scales", "values"):
            key = f"{name}/{suffix}"
            if key in codes:
                restored[key] = codes[key]
            elif key in arrays:
                restored[key] = arrays[key]
    return Parts(document["table"], restored, document["banks"])


@dataclass
class CodecResult:
    variant: str
    bytes: int | None  # the whole blob; None when skipped
    codes_bytes: int | None
    seconds: float
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "bytes": self.bytes, "codes_bytes": self.codes_bytes,
                "seconds": round(self.seconds, 2), "skipped": self.skipped}


def measure(model: QuantizedModel, variant: str, path: Path | None = None) -> tuple[CodecResult, Parts | None]:
    """Encode, write the blob to `path` (if given), decode it back from there, check every
    array bit for bit; returns the blob's size and the decoded parts (None when skipped)."""
    begin = time.perf_counter()
    try:
        blob = encode(model, variant)
    except CodecUnavailable as exc:
        return CodecResult(variant, None, None, 0.0, skipped=str(exc)), None
    if path is not None:
        atomic_write_bytes(path, blob)
        blob = Path(path).read_bytes()
    decoded = decode(blob)
    if not decoded.equal(model_parts(model)):
        raise RuntimeError(f"record codec ({variant}): the decoded model differs from the encoded one")
    (codes_length,) = struct.unpack_from("<I", blob, 5)
    return CodecResult(variant, len(blob), codes_length, time.perf_counter() - begin), decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint to pack with the record recipe")
    parser.add_argument("--calib", required=True, help="training shards for the recipe's Hessians")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="default: both")
    parser.add_argument("--recipe-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from artifactkit.fit.record import RecordRecipe, quantize_checkpoint

    model, _ = quantize_checkpoint(args.checkpoint, RecordRecipe().with_options(args.recipe_option), args.calib)
    for variant in args.variant or VARIANTS:
        print(json.dumps(measure(model, variant)[0].to_json()))


if __name__ == "__main__":
    main()
