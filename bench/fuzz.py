"""Fuzz campaign: hostile and careless input against every reader and command.

Families (each case is one command on one generated input, seeded):

    pickle    hostile pickles (a payload that would create a marker directory) in every
              container: raw pickles of protocols 0-5, torch.save zips, torch's legacy
              format, .ptz (lzma / zlib) around each, seed and baseline layouts, modules
    flip      one flipped byte in valid artifacts of every codec and both legacy formats
    truncate  the same files cut short
    header    lying .akit headers with the payload checksum fixed: duplicate names, bank
              records naming absent tensors, unknown codecs / dtypes / schemes, huge and
              overflowing shapes, reordered sections, deep nesting, NaN, policy garbage
    bomb      compression bombs: legacy .ptz, sections, headers, rANS tables, zip
              entries in checkpoints; /dev/zero as every input
    dtype     float8 / complex / wide unsigned tensors, NaN and inf, extreme magnitudes,
              legacy files asking for complex128
    misuse    output = input (same path, symlink, hard link), directories, missing and
              empty files, hostile rules files, JSON documents, options, token ids past
              the vocabulary
    cap       (--heavy only) legitimate inputs at the caps, expected to load

The contract for an "error" case: exit 2, exactly one `error:` line (the last line of
stderr; other lines only `notice:` / `warning:`), no traceback or warning from a
library, nothing written (no output, no temp file), the input untouched, no pickle
payload executed. The exported loader (`@loader` cases) must raise ValueError. Every
case runs in a forked child of a process that has imported artifactkit once, so its
peak RSS (`ru_maxrss`, which includes the ~0.3 GB every artifactkit process starts
with) and wall time are measured per case; the limits are 2 GB and 60 s.

    python bench/fuzz.py                      # ~3,000 cases, reports/fuzz.md
    python bench/fuzz.py --cases 300 --quick  # a smoke run
    python bench/fuzz.py --heavy              # plus the issue's 4 GB bombs and at-cap inputs

`tests/artifactkit/test_fuzz.py` runs a few hundred of the same cases in-process in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import pickle
import platform
import random
import shutil
import signal
import struct
import sys
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from artifactkit.format.akit import MAGIC, PREAMBLE, encode_artifact, pack_state_dict  # noqa: E402
from artifactkit.format.codecs import available_codecs  # noqa: E402
from artifactkit.format.loader_export import build_loader  # noqa: E402
from artifactkit.plan.banks import expand_banks  # noqa: E402
from artifactkit.plan.policy import resolve_policy  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.quantize.lqer import lowrank_factors  # noqa: E402

RSS_LIMIT_BYTES = 2 << 30
TIME_LIMIT_S = 60.0
FAMILIES = ("pickle", "flip", "truncate", "header", "bomb", "dtype", "misuse", "cap")
# Every int width via --bits-for (small tensors too), plus fp16, fp32 and raw.
BITS_FOR = ("b\\.0\\.a\\.q=2", "b\\.1\\.a\\.q=3", "b\\.0\\.a\\.o=4", "b\\.1\\.a\\.o=5", "b\\.0\\.m\\.d=6",
            "b\\.0\\.m\\.u=7", "tok_emb=8")
ALLOWED_STDERR_PREFIXES = ("error:", "notice:", "warning:")


@dataclass
class Case:
    family: str
    name: str
    argv: list[str]  # artifactkit arguments, or ["@loader", LOADER, ARTIFACT]
    inputs: list[str] = field(default_factory=list)  # must be unchanged afterwards
    outdir: str = ""  # must hold nothing new afterwards (for "error" cases)
    expect: str = "error"  # "error" | "ok"
    stderr_has: str = ""  # required on stderr (case-insensitive), when set
    marker: str = ""  # a hostile pickle's payload would create this


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    peak_rss: int = 0  # bytes
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ materials


def base_state() -> dict[str, torch.Tensor]:
    """Every scheme and dtype the format stores, banks included (small: ~40k values)."""
    generator = torch.Generator().manual_seed(5)
    return {
        "tok_emb.weight": torch.randn(96, 64, generator=generator) * 0.02,
        "qo_bank": torch.randn(4, 32, 64, generator=generator) * 0.05,
        "mlp_up_bank": torch.randn(2, 96, 64, generator=generator).to(torch.bfloat16),
        "b.0.m.d": (torch.randn(64, 96, generator=generator) * 0.03).to(torch.float64),
        "b.0.a.k": torch.randn(16, 64, generator=generator).to(torch.float16),
        "skip_w": torch.randn(3, 8, generator=generator, dtype=torch.float64),
        "bigram.scale": torch.tensor(0.05),
        "step_count": torch.tensor([7, -3, 2**40], dtype=torch.int64),
        "mask": torch.tensor([[True, False], [False, True]]),
        "token_ids": torch.arange(10, dtype=torch.int32).reshape(2, 5),
    }


def saved(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def header_of(data: bytes) -> tuple[int, dict, bytes]:
    _, version, length = PREAMBLE.unpack_from(data)
    return version, json.loads(zlib.decompress(data[PREAMBLE.size : PREAMBLE.size + length])), data[PREAMBLE.size + length :]


def assemble(version: int, header: Any, payload: bytes, fix_checksum: bool = True, text: str | None = None) -> bytes:
    """An .akit file from a (possibly lying) header; the payload's sha256 and size fixed."""
    if fix_checksum and isinstance(header, dict):
        header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        header["payload_bytes"] = len(payload)
    if text is None:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    block = zlib.compress(text.encode(), 9)
    return PREAMBLE.pack(MAGIC, version, len(block)) + block + payload


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def xz_zeros(total: int, block: int = 1 << 24) -> bytes:
    """An .xz stream of `total` zero bytes (a multiple of `block`) built from one
    compressed block repeated, so a 4 GiB bomb costs 0.3 s and 650 KB to make."""
    one = lzma.compress(bytes(block), format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=0)
    backward = (struct.unpack_from("<I", one, len(one) - 8)[0] + 1) * 4
    index, blocks = one[-12 - backward : -12], one[12 : -12 - backward]
    position, sizes = 2, []
    for _ in range(2):  # the one index record: unpadded size, uncompressed size
        value = shift = 0
        while True:
            byte = index[position]
            value, shift, position = value | (byte & 0x7F) << shift, shift + 7, position + 1
            if not byte & 0x80:
                break
        sizes.append(value)
    count = total // block
    body = b"\x00" + _varint(count) + (_varint(sizes[0]) + _varint(sizes[1])) * count
    body += b"\x00" * (-len(body) % 4)
    body += struct.pack("<I", zlib.crc32(body))
    flags = one[6:8]
    backward_size = struct.pack("<I", len(body) // 4 - 1)
    return one[:12] + blocks * count + body + struct.pack("<I", zlib.crc32(backward_size + flags)) + \
        backward_size + flags + b"YZ"


def zlib_zeros(total: int, block: int = 1 << 24) -> bytes:
    """A zlib stream of `total` zero bytes: one fully flushed deflate chunk repeated
    (each restarts the compressor's state), an empty final block, the Adler-32."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush()
    count = total // block
    adler = ((count * block) % 65521) << 16 | 1  # zeros leave a = 1, b = length
    return b"\x78\xda" + chunk * count + final + struct.pack(">I", adler)


class Payload:
    """A pickle whose loading would create `path`: proof that it was executed."""

    def __init__(self, path: str, how: str = "mkdir") -> None:
        self.path, self.how = path, how

    def __reduce__(self):  # noqa: D105 - the point of the exercise
        if self.how == "exec":
            return (exec, (f"import os; os.mkdir({self.path!r})",))
        if self.how == "eval":
            return (eval, (f"__import__('os').mkdir({self.path!r})",))
        return (os.mkdir, (self.path,))


def torch_zip_with_pickle(pickled: bytes) -> bytes:
    """A torch.save zip archive whose data.pkl is replaced by `pickled`."""
    source = zipfile.ZipFile(io.BytesIO(saved({"w": torch.zeros(2)})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = pickled if info.filename.endswith("data.pkl") else source.read(info)
            target.writestr(info.filename, data)
    return out.getvalue()


def legacy_torch_format(pickled: bytes) -> bytes:
    """torch's pre-1.6 format (consecutive pickles) whose object pickle is `pickled`."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(obj, protocol=2) for obj in (0x1950A86A20F9469CFC6C, 1001, sys_info)) + pickled + \
        pickle.dumps([], protocol=2)


class Materials:
    """Valid base files every family mutates, built once per work folder."""

    def __init__(self, root: Path, heavy: bool = False, quick: bool = False) -> None:
        self.root = root
        self.heavy = heavy
        self.quick = quick  # CI: smaller bombs where size does not matter, one command per slow bomb
        self.base = root / "base"
        self.base.mkdir(parents=True, exist_ok=True)
        self.state = base_state()
        self.policy = resolve_policy("int6-mixed", bits_for=BITS_FOR)
        self.checkpoint = self._write("ckpt.pt", saved(self.state))
        self.codecs = [c for c in ("lzma", "zstd", "zlib", "brotli", "raw") if c in available_codecs()] + ["ans", "auto"]
        self.artifacts = {codec: self._write(f"model-{codec}.akit", pack_state_dict(self.state, self.policy, codec).data)
                          for codec in self.codecs}
        self.artifacts["lqer"] = self._write("model-lqer.akit", self._lowrank_artifact())
        loader_codecs = ",".join(c for c in self.codecs if c != "auto")
        self.loader = self._write("loader.py", build_loader(loader_codecs, lowrank=True).text.encode())
        self.legacy = {"baseline": self._write("baseline.int8.ptz", zlib.compress(saved(self._baseline_obj()), 9)),
                       "seed": self._write("seed.int6.ptz", lzma.compress(saved(self._seed_obj())))}
        self.rules = self._write("rules.toml", b'[exact]\n"skip_w" = "control"\n')

    def _write(self, name: str, data: bytes) -> str:
        path = self.base / name
        if not path.exists():
            path.write_bytes(data)
        return str(path)

    def _lowrank_artifact(self) -> bytes:
        model = quantize_state_dict(self.state, self.policy)
        expanded = expand_banks(self.state)[0]
        for entry in model.entries:
            if entry.name in ("b.0.m.d", "b.0.m.u"):
                weight = expanded[entry.name].float().reshape(entry.shape[0], -1)
                entry.lowrank = lowrank_factors(weight - entry.quantized.dequantize().reshape(entry.shape[0], -1), 4, 16)
        return encode_artifact(model, "ans").data

    @staticmethod
    def _baseline_obj() -> dict:
        weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
        scale = weight.abs().amax(dim=1) / 127
        return {"__quant_format__": "int8_clean_per_row_v1",
                "quantized": {"blocks.0.attn.c_q.weight": torch.round(weight / scale[:, None]).to(torch.int8)},
                "scales": {"blocks.0.attn.c_q.weight": scale.to(torch.float16)},
                "dtypes": {"blocks.0.attn.c_q.weight": "bfloat16"},
                "passthrough": {"blocks.0.attn_scale": torch.ones(32, dtype=torch.float16)},
                "passthrough_orig_dtypes": {"blocks.0.attn_scale": "float32"}}

    @staticmethod
    def _seed_obj(dtype: str | None = None) -> dict:
        weight = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
        scale = (weight.abs().amax(dim=1) / 31).to(torch.float16)
        codes = torch.clamp(torch.round(weight / scale.float()[:, None]), -31, 31).to(torch.int8)
        meta: dict[str, Any] = {"b.0.a.q": {"t": "i6"}, "skip_w": "ctrl"}
        if dtype:
            meta["b.0.a.q"]["dtype"] = dtype
        return {"w": {"b.0.a.q.q": codes, "b.0.a.q.s": scale, "skip_w": torch.ones(4)}, "m": meta}

    def data(self, key: str) -> bytes:
        path = self.artifacts.get(key) or self.legacy.get(key) or key
        return Path(path).read_bytes()


# ------------------------------------------------------------------ case building


class Builder:
    """Writes each case's input files into its own folder and records the case."""

    def __init__(self, materials: Materials, seed: int) -> None:
        self.m = materials
        self.rng = random.Random(seed)
        self.cases: list[Case] = []
        self.folder = materials.root / "cases"

    def new_dir(self) -> Path:
        path = self.folder / f"{len(self.cases):05d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def file(self, folder: Path, name: str, data: bytes) -> str:
        path = folder / name
        path.write_bytes(data)
        return str(path)

    def add(self, family: str, name: str, argv: list[str], folder: Path, inputs: list[str] | None = None,
            **kwargs: Any) -> None:
        out = folder / "out"
        out.mkdir(exist_ok=True)
        argv = [str(out / a[4:]) if isinstance(a, str) and a.startswith("OUT:") else a for a in argv]
        self.cases.append(Case(family, name, argv, inputs or [], str(out), **kwargs))

    # commands that read an artifact / a checkpoint; OUT:name is an output in the case's out/ folder
    @staticmethod
    def artifact_commands(path: str, loader: str) -> list[list[str]]:
        return [["inspect", path], ["check", path], ["unpack", path, "-o", "OUT:u.pt"], ["inspect", path, "--json"],
                ["size-report", path], ["export-loader", "--artifact", path, "-o", "OUT:l.py"], ["@loader", loader, path]]

    @staticmethod
    def checkpoint_commands(path: str) -> list[list[str]]:
        return [["pack", path, "-o", "OUT:m.akit"], ["classify", path], ["size-report", path],
                ["pack", path, "-o", "OUT:m.akit", "--codec", "zlib", "--json"]]


def family_pickle(b: Builder, count: int) -> None:
    hows = ("mkdir", "exec", "eval")
    wrappers: list[tuple[str, str, Callable[[bytes], bytes]]] = [
        ("raw-pickle", ".pt", lambda p: p),
        ("torch-zip", ".pt", torch_zip_with_pickle),
        ("torch-legacy", ".pt", legacy_torch_format),
        ("ptz-lzma", ".ptz", lzma.compress),
        ("ptz-zlib", ".ptz", lambda p: zlib.compress(p, 9)),
        ("ptz-lzma-zip", ".ptz", lambda p: lzma.compress(torch_zip_with_pickle(p))),
        ("ptz-zlib-zip", ".ptz", lambda p: zlib.compress(torch_zip_with_pickle(p))),
        ("ptz-lzma-legacy", ".ptz", lambda p: lzma.compress(legacy_torch_format(p))),
        ("safetensors", ".safetensors", lambda p: p),
    ]
    for index in range(count):
        folder = b.new_dir()
        marker = str(folder / "PWNED")
        wrapper_name, suffix, wrap = wrappers[index % len(wrappers)]
        how = hows[(index // len(wrappers)) % len(hows)]
        protocol = b.rng.randint(0, 5)
        layout = b.rng.choice(["bare", "state", "seed", "baseline", "nested"])
        payload = Payload(marker, how)
        obj = {"bare": payload, "state": {"w": payload}, "seed": {"w": {"x": payload}, "m": {"x": "pt"}},
               "baseline": {"__quant_format__": "int8_clean_per_row_v1", "quantized": {"x": payload}, "scales": {}},
               "nested": {"model": {"w": torch.zeros(2), "opt": [payload]}}}[layout]
        path = b.file(folder, f"evil{suffix}", wrap(pickle.dumps(obj, protocol=protocol)))
        commands = b.checkpoint_commands(path) + b.artifact_commands(path, b.m.loader)[:3]
        command = commands[index % len(commands)] if suffix != ".ptz" else b.rng.choice(
            b.artifact_commands(path, b.m.loader)[:3])
        b.add("pickle", f"{wrapper_name}/{how}/p{protocol}/{layout}/{command[0]}", command, folder, [path],
              marker=marker)
    # careless: a whole module, numpy arrays, an optimizer-style object
    parameter = torch.nn.Parameter(torch.zeros(2))
    for name, obj in (("module", torch.nn.Linear(2, 2)), ("numpy", {"w": torch.zeros(2).numpy()}),
                      ("optimizer", {"opt": torch.optim.SGD([parameter], lr=0.1)})):
        folder = b.new_dir()
        path = b.file(folder, f"{name}.pt", saved(obj))
        b.add("pickle", f"careless/{name}", ["pack", path, "-o", "OUT:m.akit"], folder, [path])


def family_flip(b: Builder, count: int) -> None:
    keys = list(b.m.artifacts) + list(b.m.legacy)
    for index in range(count):
        key = keys[index % len(keys)]
        data = bytearray(b.m.data(key))
        position = b.rng.randrange(len(data))
        data[position] ^= b.rng.randint(1, 255)
        folder = b.new_dir()
        path = b.file(folder, f"flip-{key}.bin", bytes(data))
        commands = b.artifact_commands(path, b.m.loader)
        if key in b.m.legacy:
            commands = commands[:4]
        command = commands[b.rng.randrange(len(commands))]
        b.add("flip", f"{key}@{position}/{command[0]}", command, folder, [path])


def family_truncate(b: Builder, count: int) -> None:
    keys = list(b.m.artifacts) + list(b.m.legacy)
    for index in range(count):
        key = keys[index % len(keys)]
        data = b.m.data(key)
        cut = b.rng.choice([0, 1, 8, 13, 14, 15]) if index % 5 == 0 else b.rng.randrange(len(data))
        folder = b.new_dir()
        path = b.file(folder, f"cut-{key}.bin", data[:cut])
        commands = b.artifact_commands(path, b.m.loader)
        if key in b.m.legacy:
            commands = commands[:4]
        command = commands[b.rng.randrange(len(commands))]
        b.add("truncate", f"{key}[:{cut}]/{command[0]}", command, folder, [path])


def _swap_sections(version: int, header: dict, payload: bytes, first: int, second: int) -> bytes:
    """The same file with two sections' records and bytes swapped (checksum fixed)."""
    sections, parts, offset = header["sections"], [], 0
    for section in sections:
        parts.append(payload[offset : offset + section["stored_bytes"]])
        offset += section["stored_bytes"]
    sections[first], sections[second] = sections[second], sections[first]
    parts[first], parts[second] = parts[second], parts[first]
    return assemble(version, header, b"".join(parts))


def header_lies() -> list[tuple[str, Callable[[dict], Any]]]:
    """(name, edit): each edit mutates a header in place (or returns raw JSON text)."""
    def tensor(h: dict, name: str) -> dict:
        return next(t for t in h["tensors"] if t["name"] == name)

    def first_int(h: dict) -> dict:
        return next(t for t in h["tensors"] if t["scheme"] == "int")

    def first_of(h: dict, scheme: str) -> dict:
        return next(t for t in h["tensors"] if t["scheme"] == scheme)

    lies: list[tuple[str, Callable[[dict], Any]]] = [
        ("duplicate-name", lambda h: h["tensors"][1].update(name=h["tensors"][0]["name"])),
        ("duplicate-fp-name", lambda h: tensor(h, "skip_w").update(name="bigram.scale")),
        ("bank-member-missing", lambda h: h["banks"][0]["members"].__setitem__(0, "no.such.tensor")),
        ("bank-shape-lie", lambda h: h["banks"][0].update(shape=[h["banks"][0]["shape"][0], 7, 7])),
        ("bank-count-lie", lambda h: h["banks"][0].update(shape=[9] + h["banks"][0]["shape"][1:])),
        ("bank-dtype-lie", lambda h: h["banks"][0].update(dtype="float16")),
        ("bank-twice", lambda h: h["banks"].append(dict(h["banks"][0], name="other_bank"))),
        ("bank-name-is-tensor", lambda h: h["banks"][0].update(name="skip_w")),
        ("bank-empty", lambda h: h["banks"].append({"name": "e", "shape": [0], "dtype": "float32", "members": []})),
        ("bank-not-dict", lambda h: h["banks"].append(5)),
        ("member-repeated", lambda h: h["banks"][0]["members"].__setitem__(1, h["banks"][0]["members"][0])),
        ("codec-unknown", lambda h: h["sections"][2].update(codec="snappy")),
        ("codec-ans-on-scales", lambda h: h["sections"][1].update(codec="ans")),
        ("codec-null", lambda h: h["sections"][3].update(codec=None)),
        ("scheme-unknown", lambda h: h["tensors"][0].update(scheme="evil")),
        ("scheme-drop", lambda h: h["tensors"][0].update(scheme="drop")),
        ("bits-9", lambda h: first_int(h).update(bits=9)),
        ("bits-true", lambda h: first_int(h).update(bits=True)),
        ("bits-float", lambda h: first_int(h).update(bits=6.0)),
        ("shape-2^31", lambda h: first_of(h, "fp16").update(shape=[1 << 16, 1 << 15])),
        ("shape-overflow-int64", lambda h: first_of(h, "fp16").update(shape=[1 << 32, 1 << 32, 0 + 1])),
        ("shape-wraps-to-zero", lambda h: first_of(h, "fp32").update(shape=[1 << 32, 1 << 32])),
        ("shape-negative", lambda h: first_of(h, "fp32").update(shape=[-1, 8])),
        ("shape-two-negatives", lambda h: first_of(h, "fp32").update(shape=[-3, -8])),
        ("shape-bool", lambda h: first_of(h, "fp32").update(shape=[True, 24])),
        ("shape-float", lambda h: first_of(h, "fp32").update(shape=[3.0, 8])),
        ("shape-string", lambda h: first_of(h, "fp32").update(shape="3x8")),
        ("shape-nested", lambda h: first_of(h, "fp32").update(shape=[[3], 8])),
        ("shape-2^70", lambda h: first_of(h, "fp16").update(shape=[1 << 70])),
        ("shape-int-2^31", lambda h: first_int(h).update(shape=[1 << 16, 1 << 15])),
        ("dtype-float8-e4m3", lambda h: first_of(h, "fp32").update(dtype="float8_e4m3fn")),
        ("dtype-float8-e5m2", lambda h: first_int(h).update(dtype="float8_e5m2")),
        ("dtype-complex64", lambda h: first_of(h, "fp16").update(dtype="complex64")),
        ("dtype-complex128", lambda h: first_of(h, "fp32").update(dtype="complex128")),
        ("dtype-uint16-raw", lambda h: first_of(h, "raw").update(dtype="uint16")),
        ("dtype-float-as-raw", lambda h: first_of(h, "raw").update(dtype="float32")),
        ("dtype-attribute", lambda h: first_of(h, "fp32").update(dtype="save")),
        ("dtype-dunder", lambda h: first_of(h, "fp32").update(dtype="__class__")),
        ("dtype-number", lambda h: first_of(h, "fp32").update(dtype=5)),
        ("raw-bytes-plus-one", lambda h: h["sections"][3].update(raw_bytes=h["sections"][3]["raw_bytes"] + 1)),
        ("raw-bytes-x1000", lambda h: h["sections"][0].update(raw_bytes=h["sections"][0]["raw_bytes"] * 1000)),
        ("raw-bytes-negative", lambda h: h["sections"][2].update(raw_bytes=-1)),
        ("stored-shifted", lambda h: (h["sections"][2].update(stored_bytes=h["sections"][2]["stored_bytes"] - 1),
                                      h["sections"][3].update(stored_bytes=h["sections"][3]["stored_bytes"] + 1))),
        ("stored-negative", lambda h: h["sections"][4].update(stored_bytes=-5)),
        ("section-missing", lambda h: h["sections"].pop()),
        ("section-extra", lambda h: h["sections"].append(dict(h["sections"][-1]))),
        ("section-renamed", lambda h: h["sections"][4].update(name="fp32")),
        ("policy-list", lambda h: h.update(policy=[1, 2])),
        ("policy-nan-threshold", lambda h: h["policy"].update(small_threshold=float("nan"))),
        ("policy-version", lambda h: h["policy"].update(version="x")),
        ("policy-no-categories", lambda h: h["policy"].pop("categories")),
        ("meta-list", lambda h: h.update(meta=[1])),
        ("dropped-dict", lambda h: h.update(dropped={"a": 1})),
        ("tensors-dict", lambda h: h.update(tensors={"a": 1})),
        ("tensors-missing", lambda h: h.pop("tensors")),
        ("format-tag", lambda h: h.update(format="akit/9")),
        ("name-number", lambda h: h["tensors"][0].update(name=5)),
        ("category-list", lambda h: h["tensors"][0].update(category=[1])),
        ("clip-number", lambda h: first_int(h).update(clip=5)),
        ("nan-bits", lambda h: first_int(h).update(bits=float("nan"))),
        ("header-list", lambda h: [h]),
        ("header-number", lambda h: 5),
        ("deep-nesting-200k", lambda h: '{"format":"akit/1","tensors":' + "[" * 200_000 + "]" * 200_000 + "}"),
        ("deep-nesting-field", lambda h: json.dumps(h)[:-1] + ',"x":' + "[" * 50_000 + "]" * 50_000 + "}"),
        ("huge-number", lambda h: json.dumps(h).replace('"bits":', '"bits":' + "9" * 5000 + ",\"b2\":", 1)),
        ("infinity", lambda h: json.dumps(h).replace('"payload_bytes":', '"payload_bytes":Infinity,"pb":', 1)),
        ("not-json", lambda h: "{this is not json"),
        ("lowrank-on-v1", lambda h: first_int(h).update(lowrank={"rank": 1, "group": 1})),
        ("codec-list", lambda h: h["sections"][2].update(codec=[1])),
        ("scheme-list", lambda h: h["tensors"][0].update(scheme=["int"])),
        ("dtype-dict", lambda h: first_of(h, "fp32").update(dtype={"a": 1})),
        ("members-nested", lambda h: h["banks"][0]["members"].__setitem__(0, [1])),
        ("name-list", lambda h: h["tensors"][0].update(name=["x"])),
        ("sizes-string", lambda h: h["sections"][0].update(raw_bytes="12")),
    ]
    return lies


# Header fields the exported loader never reads (it restores tensors, not policies): it may
# load these files, and does so correctly; the checked reader refuses them. Bit widths
# matter to it only under `ans` (the codes' checksum covers them).
LOADER_IGNORES = {"policy-list", "policy-nan-threshold", "policy-version", "policy-no-categories", "meta-list",
                  "dropped-dict", "category-list", "clip-number", "name-number", "format-tag", "bits-9",
                  "bits-true", "bits-float", "nan-bits", "infinity", "lowrank-on-fp16", "bank-dtype-lie"}


def lowrank_lies() -> list[tuple[str, Callable[[dict], Any]]]:
    def first_lowrank(h: dict) -> dict:
        return next(t for t in h["tensors"] if "lowrank" in t)
    return [
        ("lowrank-rank-0", lambda h: first_lowrank(h)["lowrank"].update(rank=0)),
        ("lowrank-rank-huge", lambda h: first_lowrank(h)["lowrank"].update(rank=1 << 20)),
        ("lowrank-group-0", lambda h: first_lowrank(h)["lowrank"].update(group=0)),
        ("lowrank-group-lie", lambda h: first_lowrank(h)["lowrank"].update(group=8)),
        ("lowrank-on-fp16", lambda h: next(t for t in h["tensors"] if t["scheme"] == "fp16").update(
            lowrank={"rank": 1, "group": 1})),
        ("lowrank-dropped-section", lambda h: h["sections"].pop()),
    ]


def family_header(b: Builder, count: int) -> None:
    lies = [(key, name, edit) for key in ("zlib", "ans", "lzma", "raw") if key in b.m.artifacts
            for name, edit in header_lies()]
    lies += [("lqer", name, edit) for name, edit in lowrank_lies()]
    order = list(range(len(lies)))
    b.rng.shuffle(order)
    for index in range(count):
        key, name, edit = lies[order[index % len(lies)]]
        version, header, payload = header_of(b.m.data(key))
        result = edit(header)
        text = result if isinstance(result, str) else None
        target = result if isinstance(result, (list, int)) and not isinstance(result, bool) else header
        data = assemble(version, target, payload, text=text)
        folder = b.new_dir()
        path = b.file(folder, f"{name}.akit", data)
        commands = b.artifact_commands(path, b.m.loader)
        if name in LOADER_IGNORES and not (key == "ans" and name in ("bits-9", "bits-true")):
            commands = commands[:-1]
        command = commands[(index // len(lies) + order[index % len(lies)]) % len(commands)]
        b.add("header", f"{key}/{name}/{command[0]}", command, folder, [path])
    # reordered sections, self-consistent (checksum over the reordered payload)
    for key in ("raw", "zlib", "lzma", "ans"):
        if key not in b.m.artifacts:
            continue
        for first, second in ((2, 3), (3, 4), (1, 2)):
            version, header, payload = header_of(b.m.data(key))
            folder = b.new_dir()
            path = b.file(folder, f"swap-{first}-{second}.akit", _swap_sections(version, header, payload, first, second))
            for command in (["@loader", b.m.loader, path], ["check", path]):
                b.add("header", f"{key}/sections-reordered-{first}{second}/{command[0]}", command, folder, [path])


def _fp32_bomb(b: Builder, codec: str, inflate: int) -> bytes:
    """A file whose fp32 section is a `codec` stream inflating to `inflate` bytes while the
    header (consistent with the shapes) declares 12 bytes."""
    from artifactkit.format import codecs

    version, header, payload = header_of(b.m.data("raw"))
    parts, offset = [], 0
    for section in header["sections"]:
        part = payload[offset : offset + section["stored_bytes"]]
        offset += section["stored_bytes"]
        if section["name"] == "fp32":
            if codec == "zlib":
                part = zlib_zeros(inflate)
            elif codec == "lzma":
                part = xz_zeros(inflate)
            else:
                part = codecs.compress(codec, bytes(inflate))
            section.update(codec=codec, stored_bytes=len(part))
        parts.append(part)
    return assemble(version, header, b"".join(parts))


def _ans_table_bomb(b: Builder) -> bytes:
    """An rANS codes blob whose header asks for 65,535 decode tables at 15-bit precision."""
    version, header, payload = header_of(b.m.data("ans"))
    codes = header["sections"][0]
    blob = bytearray(payload[: codes["stored_bytes"]])
    blob[4], blob[6:8] = 15, struct.pack("<H", 65535)
    return assemble(version, header, bytes(blob) + payload[codes["stored_bytes"] :])


def family_bomb(b: Builder, count: int) -> None:
    legacy_size = (4 << 30) if b.m.heavy else (300 << 20)
    generated: list[tuple[str, bytes, str]] = []  # (name, data, suffix)
    generated.append(("legacy-xz", xz_zeros(legacy_size), ".ptz"))
    generated.append(("legacy-zlib", zlib_zeros(legacy_size), ".ptz"))
    zip_in_xz = io.BytesIO()
    with zipfile.ZipFile(zip_in_xz, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("archive/data/0", bytes(64 << 20))
    generated.append(("legacy-xz-deflated-zip", lzma.compress(zip_in_xz.getvalue()), ".ptz"))
    slow = 1 << 20 if b.m.quick else 16 << 20  # zstd / brotli compress the zeros for real
    for codec, inflate in (("zlib", 1 << 30), ("lzma", 1 << 30), ("zstd", slow), ("brotli", slow)):
        if codec in available_codecs():
            generated.append((f"section-{codec}", _fp32_bomb(b, codec, inflate), ".akit"))
    generated.append(("ans-tables", _ans_table_bomb(b), ".akit"))
    version, header, payload = header_of(b.m.data("zlib"))
    text = json.dumps(header)[:-1] + ',"pad":"' + " " * (17 << 20) + '"}'
    generated.append(("header-17MB", assemble(version, None, payload, text=text), ".akit"))
    sections = header["sections"]
    declared = json.loads(json.dumps(header))
    declared["tensors"].append({"name": "huge", "shape": [3 << 28], "scheme": "fp32", "dtype": "float32",
                                "category": "other"})
    declared["sections"][3]["raw_bytes"] = sections[3]["raw_bytes"] + (3 << 30)
    generated.append(("declared-3GB", assemble(version, declared, payload), ".akit"))
    for name, data, suffix in generated:
        folder = b.new_dir()
        path = b.file(folder, f"{name}{suffix}", data)
        commands = b.artifact_commands(path, b.m.loader)[: 3 if suffix == ".ptz" else 7]
        if b.m.quick and name.startswith("legacy"):  # each decompresses 256 MiB before its error: ~3 s
            commands = commands[:1]
        for command in commands:
            b.add("bomb", f"{name}/{command[0]}", command, folder, [path])
    # checkpoints: a deflated zip entry, overlapping entries, a legacy storage of 2**40 elements
    deflated = io.BytesIO()
    source = zipfile.ZipFile(io.BytesIO(saved({"w": torch.zeros(4)})))
    with zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data/0"):
                data = bytes((256 if b.m.heavy else 4 if b.m.quick else 32) << 20)
            target.writestr(info.filename, data, zipfile.ZIP_DEFLATED)
    legacy = saved({"w": torch.zeros(3)}, _use_new_zipfile_serialization=False)
    at = legacy.find(b"X\x03\x00\x00\x00cpu") + 10
    huge_numel = legacy[:at] + b"\x8a\x06" + (1 << 40).to_bytes(6, "little") + legacy[at + 2 :]
    for name, data in (("zip-deflated", deflated.getvalue()), ("zip-overlapping", _overlapping_zip()),
                       ("legacy-numel-2^40", huge_numel)):
        folder = b.new_dir()
        path = b.file(folder, f"{name}.pt", data)
        for command in b.checkpoint_commands(path)[:2]:
            b.add("bomb", f"{name}/{command[0]}", command, folder, [path])
    # /dev/zero as every input
    for command in (["inspect", "/dev/zero"], ["check", "/dev/zero"], ["unpack", "/dev/zero", "-o", "OUT:u.pt"],
                    ["size-report", "/dev/zero"], ["export-loader", "--artifact", "/dev/zero", "-o", "OUT:l.py"],
                    ["pack", "/dev/zero", "-o", "OUT:m.akit"], ["classify", "/dev/zero"],
                    ["pack", b.m.checkpoint, "-o", "OUT:m.akit", "--rules", "/dev/zero"],
                    ["check", b.m.artifacts["zlib"], "--roundtrip", "/dev/zero", "--max-delta", "1"],
                    ["@loader", b.m.loader, "/dev/zero"]):
        folder = b.new_dir()
        b.add("bomb", f"dev-zero/{' '.join(command[:2])}", command, folder, [])
    del count


def _overlapping_zip() -> bytes:
    """A torch.save zip of 64 storages whose central directory points all of them at the
    first one's 4 MiB of data: 256 MiB declared in a 4 MiB file (overlapping entries)."""
    data = bytearray(saved({f"w{i}": torch.zeros(1 << 20 if i == 0 else 1) for i in range(64)}))
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    first = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    position = data.find(b"PK\x01\x02")
    while position != -1:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        name = bytes(data[position + 46 : position + 46 + name_length]).decode()
        if "/data/" in name and not name.endswith("/data/0"):
            struct.pack_into("<III", data, position + 16, first.CRC, first.compress_size, first.file_size)
            struct.pack_into("<I", data, position + 42, first.header_offset)
        position = data.find(b"PK\x01\x02", position + 46 + name_length + extra_length + comment_length)
    return bytes(data)


def family_dtype(b: Builder, count: int) -> None:
    weight = torch.randn(320, 256, generator=torch.Generator().manual_seed(3))  # large: int-quantized
    small = weight[:16, :64].contiguous()  # small: fp16
    bad_dtypes = [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64, torch.complex128, torch.uint16,
                  torch.uint32, torch.uint64]
    for extra in ("float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"):
        if hasattr(torch, extra):
            bad_dtypes.append(getattr(torch, extra))
    cases: list[tuple[str, dict, str, str]] = []  # (name, state, expect, stderr_has on pack)
    for dtype in bad_dtypes:
        for name, value in (("b.0.a.q", weight), ("skip_w", small[:3, :8]), ("bigram.scale", torch.tensor(0.5))):
            try:
                converted = value.to(dtype)
            except (RuntimeError, TypeError):
                continue
            cases.append((f"{str(dtype).removeprefix('torch.')}/{name}", {name: converted, "b.1.a.q": weight},
                          "error", "not storable"))
    for label, fill in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        for rows in ("one", "all"):
            bad = weight.clone()
            if rows == "one":
                bad[b.rng.randrange(320), b.rng.randrange(256)] = fill
            else:
                bad[:] = fill
            cases.append((f"{label}-{rows}/int8", {"tok_emb.weight": bad}, "error", "NaN / inf"))
            cases.append((f"{label}-{rows}/int6-bank", {"qo_bank": torch.stack([weight, bad])}, "error", "NaN / inf"))
            cases.append((f"{label}-{rows}/fp16-kept", {"b.0.a.k": bad[:16, :64].to(torch.float16)}, "ok", ""))
    for magnitude in (1e30, 1e-30, 1e20, 1e-20):
        cases.append((f"magnitude-{magnitude:g}/int8", {"tok_emb.weight": weight * magnitude}, "ok", "relative error"))
        cases.append((f"magnitude-{magnitude:g}/fp16", {"b.0.a.k": small * magnitude}, "ok", "relative error"))
    cases.append(("float64-1e300/int8", {"tok_emb.weight": weight.double() * 1e300}, "ok", "relative error"))
    cases.append(("empty", {"tok_emb.weight": torch.zeros(0, 64)}, "ok", ""))
    cases.append(("no-tensors", {"a": 1, "b": "x"}, "error", "no tensors"))
    cases.append(("key-not-string", {1: weight}, "error", "not a string"))
    for name, state, expect, needle in cases:
        folder = b.new_dir()
        path = b.file(folder, "ckpt.pt", saved(state))
        if expect == "error" and b.rng.random() < 0.3:  # size-report packs in memory: the same refusals
            command = ["size-report", path]
        else:
            command = ["pack", path, "-o", "OUT:m.akit"]
        b.add("dtype", f"{name}/{command[0]}", command, folder, [path], expect=expect, stderr_has=needle)
    # legacy files asking for dtypes no model restores, or with inconsistent entries
    seed_lies = [("seed-complex128", lambda o: o["m"]["b.0.a.q"].update(dtype="complex128")),
                 ("seed-float8", lambda o: o["m"]["b.0.a.q"].update(dtype="torch.float8_e4m3fn")),
                 ("seed-int64-target", lambda o: o["m"]["b.0.a.q"].update(dtype="int64")),
                 ("seed-attribute", lambda o: o["m"]["b.0.a.q"].update(dtype="save")),
                 ("seed-float-codes", lambda o: o["w"].update({"b.0.a.q.q": torch.randn(16, 8)})),
                 ("seed-scale-shape", lambda o: o["w"].update({"b.0.a.q.s": torch.ones(3)})),
                 ("seed-scale-int", lambda o: o["w"].update({"b.0.a.q.s": torch.ones(16, dtype=torch.int64)})),
                 ("seed-codes-scalar", lambda o: o["w"].update({"b.0.a.q.q": torch.tensor(3, dtype=torch.int8)})),
                 ("seed-codes-string", lambda o: o["w"].update({"b.0.a.q.q": "codes"})),
                 ("seed-passthrough-complex", lambda o: o["w"].update(skip_w=torch.ones(4, dtype=torch.complex64))),
                 ("seed-name-number", lambda o: o["m"].update({5: "pt"})),
                 ("seed-meta-list", lambda o: o.update(m=[1]))]
    baseline_lies = [("baseline-complex64", lambda o: o["dtypes"].update({"blocks.0.attn.c_q.weight": "complex64"})),
                     ("baseline-orig-dtype", lambda o: o["passthrough_orig_dtypes"].update(
                         {"blocks.0.attn_scale": "float8_e5m2"})),
                     ("baseline-no-scale", lambda o: o["scales"].clear()),
                     ("baseline-scales-list", lambda o: o.update(scales=[1])),
                     ("baseline-passthrough-str", lambda o: o["passthrough"].update({"x": "y"}))]
    for name, edit in seed_lies + baseline_lies:
        obj = b.m._seed_obj() if name.startswith("seed") else b.m._baseline_obj()
        edit(obj)
        folder = b.new_dir()
        blob = lzma.compress(saved(obj)) if name.startswith("seed") else zlib.compress(saved(obj))
        path = b.file(folder, f"{name}.ptz", blob)
        for command in b.artifact_commands(path, b.m.loader)[:3]:
            b.add("dtype", f"{name}/{command[0]}", command, folder, [path])
    del count


def family_misuse(b: Builder, count: int, tokenizer: str | None) -> None:
    m = b.m
    # output = input: the same path, a symlink, a hard link
    for kind in ("same", "symlink", "hardlink"):
        for command_name in ("pack", "unpack", "export-loader"):
            folder = b.new_dir()
            source = b.file(folder, "in.pt" if command_name == "pack" else "in.akit",
                            Path(m.checkpoint if command_name == "pack" else m.artifacts["zlib"]).read_bytes())
            target = str(folder / "out" / "target")
            (folder / "out").mkdir(exist_ok=True)
            if kind == "same":
                target = source
            elif kind == "symlink":
                os.symlink(source, target)
            else:
                os.link(source, target)
            argv = {"pack": ["pack", source, "-o", target], "unpack": ["unpack", source, "-o", target],
                    "export-loader": ["export-loader", "--artifact", source, "-o", target]}[command_name]
            b.cases.append(Case("misuse", f"output-is-input/{kind}/{command_name}", argv, [source],
                                str(folder / "out") if kind == "same" else "", stderr_has="input"))
    simple: list[tuple[str, list[str]]] = []
    folder = b.new_dir()
    empty = b.file(folder, "empty.akit", b"")
    text = b.file(folder, "notes.txt", b"just some text\n" * 10)
    png = b.file(folder, "image.png", b"\x89PNG\r\n\x1a\n" + bytes(64))
    directory = str(folder / "adir")
    os.mkdir(directory)
    missing = str(folder / "missing.akit")
    for path in (empty, text, png, directory, missing):
        for command in b.artifact_commands(path, m.loader)[:3] + b.checkpoint_commands(path)[:2]:
            simple.append((f"{Path(path).name}/{command[0]}", command))
    simple.append(("output-is-directory", ["unpack", m.artifacts["zlib"], "-o", directory]))
    rules = {"exact-5": "exact = 5\n", "rule-5": "rule = 5\n", "regex-number": '[[rule]]\nregex = 5\ncategory = "attn"\n',
             "category-number": '[exact]\n"x" = 5\n', "category-unknown": '[exact]\n"x" = "weights"\n',
             "bad-regex": '[[rule]]\nregex = "("\ncategory = "attn"\n', "rule-no-regex": '[[rule]]\ncategory = "attn"\n',
             "unknown-section": "[other]\na = 1\n", "not-toml": "this is = = not toml\n",
             "deep": "a = " + "[" * 50_000 + "]" * 50_000 + "\n", "binary": "\x00\xff\xfe" * 10,
             "rule-table": '[rule]\nregex = "x"\ncategory = "attn"\n', "reason-list": '[[rule]]\nregex = "x"\n'
             'category = "attn"\nreason = [1]\n'}
    for name, content in rules.items():
        path = b.file(folder, f"rules-{name}.toml", content.encode("utf-8", "surrogateescape")
                      if name != "binary" else b"\x00\xff\xfe" * 10)
        simple.append((f"rules/{name}/pack", ["pack", m.checkpoint, "-o", "OUT:m.akit", "--rules", path]))
        simple.append((f"rules/{name}/classify", ["classify", m.checkpoint, "--rules", path]))
    documents = {"deep": "[" * 100_000 + "]" * 100_000, "not-json": "{", "list": "[1]", "nan-delta": '{"delta_bpb": NaN}',
                 "binary": "\udcff"}
    for name, content in documents.items():
        path = b.file(folder, f"rt-{name}.json", content.encode("utf-8", "surrogateescape"))
        simple.append((f"roundtrip-json/{name}", ["check", m.artifacts["zlib"], "--roundtrip", path, "--max-delta", "1"]))
    for options in (["--budget", "0"], ["--budget", "abc"], ["--bits", "attn=99"], ["--bits", "attn=x"],
                    ["--bits-for", "(=6"], ["--bits-for", "x=1"], ["--clip", "attn=std:nan"], ["--clip", "attn=bogus"],
                    ["--clip", "attn=percentile:2"], ["--codec", "snappy"], ["--policy", "int3"]):
        simple.append((f"options/pack {' '.join(options)}", ["pack", m.checkpoint, "-o", "OUT:m.akit", *options]))
    simple.append(("options/export-loader-codecs", ["export-loader", "--codecs", "lzma,snappy", "-o", "OUT:l.py"]))
    simple.append(("options/check-max-delta-alone", ["check", m.artifacts["zlib"], "--max-delta", "1"]))
    simple.append(("options/fit-small-threshold-nan", ["fit", m.checkpoint, "-o", "OUT:f.akit", "--small-threshold",
                                                       "nan"]))
    if tokenizer:
        shard = folder / "val_000.bin"
        header = [20240520, 1, 64] + [0] * 253
        tokens = [1] + [min(60000, 5000 + i * 700) for i in range(63)]
        shard.write_bytes(struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}H", *tokens))
        simple.append(("audit-tokenizer/ids-past-vocab", ["audit-tokenizer", tokenizer, "--val", str(shard)]))
        simple.append(("audit-tokenizer/not-a-model", ["audit-tokenizer", text]))
    for name, argv in simple:
        case_folder = b.new_dir()
        b.add("misuse", name, argv, case_folder, [p for p in argv if isinstance(p, str) and Path(p).is_file()
                                                  and not p.startswith("/dev/")])
    del count


def family_cap(b: Builder) -> None:
    """Legitimate inputs at the caps (--heavy): 2**27 int2 codes under ans, 2**26 float32
    values (256 MiB decoded) of zeros under lzma; expected to load, under the memory limit."""
    from artifactkit.format.akit import encode_artifact as encode
    from artifactkit.plan.classify import Classification
    from artifactkit.plan.policy import Scheme, default_policy
    from artifactkit.plan.schemes import SchemeKind
    from artifactkit.quantize.apply import QuantEntry, QuantizedModel
    from artifactkit.quantize.intn import QuantizedTensor

    rows, cols = 1 << 14, 1 << 13
    entry = QuantEntry("b.0.a.q", "attn", Scheme(SchemeKind.INT, 2, "percentile"), "cap", (rows, cols), "float32",
                       quantized=QuantizedTensor(torch.zeros(rows, cols, dtype=torch.int8),
                                                 torch.ones(rows, dtype=torch.float16), 2, (rows, cols)))
    ans_cap = encode(QuantizedModel([entry], [], [], default_policy(), Classification([])), "ans").data
    entry = QuantEntry("skip_w", "control", Scheme(SchemeKind.FP32), "cap", (rows // 2, cols), "float32",
                       values=torch.zeros(rows // 2, cols))
    fp32_cap = encode(QuantizedModel([entry], [], [], default_policy(), Classification([])), "lzma").data
    for name, data in (("ans-2^27-int2", ans_cap), ("lzma-2^26-fp32", fp32_cap)):
        folder = b.new_dir()
        path = b.file(folder, f"{name}.akit", data)
        for command in (["check", path], ["unpack", path, "-o", "OUT:u.pt"], ["@loader", b.m.loader, path]):
            b.add("cap", f"{name}/{command[0]}", command, folder, [path], expect="ok")


def build_cases(root: Path, seed: int = 0, scale: int = 1, tokenizer: str | None = None,
                heavy: bool = False, quick: bool = False) -> list[Case]:
    """Every family's cases, generated under `root` (scale 1: ~500 cases; 8: ~2,700)."""
    materials = Materials(root, heavy, quick)
    builder = Builder(materials, seed)
    family_pickle(builder, 30 * scale)
    family_flip(builder, 60 * scale)
    family_truncate(builder, 40 * scale)
    family_header(builder, 90 * scale)
    family_bomb(builder, 0)
    family_dtype(builder, 0)
    family_misuse(builder, 0, tokenizer)
    if heavy:
        family_cap(builder)
    return builder.cases


# ------------------------------------------------------------------ running and judging


def file_state(paths: list[str]) -> dict[str, tuple[str, float]]:
    state = {}
    for path in paths:
        target = Path(path)
        if target.is_file() and not target.is_symlink():
            state[path] = (hashlib.sha256(target.read_bytes()).hexdigest(), target.stat().st_mtime)
    return state


def judge(case: Case, outcome: Outcome, before: dict[str, tuple[str, float]]) -> list[str]:
    """The contract violations of one finished case (empty: it passed)."""
    problems = []
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if case.marker and os.path.exists(case.marker):
        problems.append("PICKLE PAYLOAD EXECUTED")
    if "Traceback" in outcome.stderr or "Traceback" in outcome.stdout:
        problems.append("traceback printed")
    if outcome.warnings or any("Warning:" in line and not line.startswith("warning:") for line in lines):
        problems.append(f"a library warning was shown: {(outcome.warnings or lines)[0][:120]}")
    if case.expect == "error":
        errors = [line for line in lines if line.startswith("error:")]
        if outcome.code != 2:
            problems.append(f"exit {outcome.code}, not 2")
        if len(errors) != 1 or not lines or not lines[-1].startswith("error:"):
            problems.append(f"{len(errors)} error lines (stderr: {outcome.stderr.strip()[-200:]!r})")
        stray = [line for line in lines if not line.startswith(ALLOWED_STDERR_PREFIXES)]
        if stray:
            problems.append(f"stray stderr line {stray[0][:120]!r}")
        if case.outdir and os.path.isdir(case.outdir) and os.listdir(case.outdir):
            problems.append(f"wrote {sorted(os.listdir(case.outdir))[:3]}")
    elif outcome.code != 0:
        problems.append(f"exit {outcome.code}, not 0 ({outcome.stderr.strip()[-200:]!r})")
    if case.stderr_has and case.stderr_has.lower() not in outcome.stderr.lower():
        problems.append(f"stderr lacks {case.stderr_has!r}: {outcome.stderr.strip()[-160:]!r}")
    after = file_state(list(before))
    for path, state in before.items():
        if after.get(path, (None,))[0] != state[0]:
            problems.append(f"input {Path(path).name} changed")
    if outcome.peak_rss > RSS_LIMIT_BYTES:
        problems.append(f"peak RSS {outcome.peak_rss / 2**30:.2f} GiB")
    if outcome.seconds > TIME_LIMIT_S:
        problems.append(f"took {outcome.seconds:.0f} s")
    return problems


_LOADERS: dict[str, Callable[[str], Any]] = {}


def load_with_loader(loader: str, artifact: str) -> tuple[int, str]:
    """(exit code, stderr) of the exported loader on `artifact`: 2 and one line for its
    ValueError, 0 when it returns, 1 and the traceback for anything else."""
    if loader not in _LOADERS:
        namespace: dict[str, Any] = {"__name__": "exported_loader"}
        exec(compile(Path(loader).read_text(), loader, "exec"), namespace)  # noqa: S102 - our own exported module
        _LOADERS[loader] = namespace["load_artifact"]
    try:
        _LOADERS[loader](artifact)
    except ValueError as error:
        return 2, f"error: {error}\n"
    except Exception:  # noqa: BLE001 - the contract says ValueError
        return 1, traceback.format_exc()
    return 0, ""


def run_in_process(case: Case) -> Outcome:
    """Run one case in this process (CliRunner): the CI test's runner."""
    from click.testing import CliRunner

    from artifactkit.cli import main

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.argv[0] == "@loader":
            code, stderr = load_with_loader(case.argv[1], case.argv[2])
            stdout = ""
        else:
            result = CliRunner().invoke(main, case.argv)
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                stderr += "".join(traceback.format_exception(result.exception))
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return Outcome(code, stdout, stderr, time.perf_counter() - start, 0, shown)


def _child(case: Case, stdout_path: str, stderr_path: str) -> None:
    """In a forked child: run the case like the console script would, then _exit."""
    code = 1
    try:
        out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if case.argv[0] == "@loader":
            code, text = load_with_loader(case.argv[1], case.argv[2])
            sys.stderr.write(text)
        else:
            from artifactkit.cli import main

            try:
                main(args=case.argv, prog_name="artifactkit")
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - report whatever escaped, then exit
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_forked(case: Case, scratch: Path, timeout: float = TIME_LIMIT_S * 2) -> Outcome:
    """Run one case in a forked child; its exit code, output, wall time and peak RSS."""
    stdout_path, stderr_path = str(scratch / "stdout"), str(scratch / "stderr")
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(case, stdout_path, stderr_path)
    while True:
        finished, status, usage = os.wait4(pid, os.WNOHANG)
        if finished:
            break
        if time.perf_counter() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            finished, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    read = lambda path: Path(path).read_text(errors="replace") if Path(path).exists() else ""  # noqa: E731
    return Outcome(code, read(stdout_path), read(stderr_path), seconds, usage.ru_maxrss * 1024)


FRESH_LOADER = ("import sys\nnamespace = {}\nexec(open(sys.argv[1]).read(), namespace)\ntry:\n"
                "    namespace['load_artifact'](sys.argv[2])\nexcept ValueError as error:\n"
                "    print('error:', error, file=sys.stderr)\n    sys.exit(2)\n")


def run_fresh(case: Case, scratch: Path, timeout: float = TIME_LIMIT_S * 2) -> Outcome:
    """Run one case in a new interpreter (`python -m artifactkit ...`): its peak RSS
    (that child's own, from wait4) includes everything a user's process pays."""
    import subprocess

    if case.argv[0] == "@loader":
        command = [sys.executable, "-c", FRESH_LOADER, case.argv[1], case.argv[2]]
    else:
        command = [sys.executable, "-m", "artifactkit", *case.argv]
    stdout_path, stderr_path = scratch / "fresh.out", scratch / "fresh.err"
    start = time.perf_counter()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO)
        while True:
            finished, status, usage = os.wait4(process.pid, os.WNOHANG)
            if finished:
                break
            if time.perf_counter() - start > timeout:
                process.kill()
                finished, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Outcome(process.returncode, stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace"),
                   time.perf_counter() - start, usage.ru_maxrss * 1024)


# ------------------------------------------------------------------ campaign


def campaign(cases: list[Case], scratch: Path, progress: bool = True) -> list[dict[str, Any]]:
    records = []
    for index, case in enumerate(cases):
        before = file_state(case.inputs)
        outcome = run_forked(case, scratch)
        problems = judge(case, outcome, before)
        records.append({**asdict(case), "code": outcome.code, "seconds": outcome.seconds, "peak_rss": outcome.peak_rss,
                        "problems": problems, "stderr": outcome.stderr[-400:]})
        if progress and (index % 100 == 0 or problems):
            status = "FAIL " + "; ".join(problems) if problems else "ok"
            print(f"[{index + 1}/{len(cases)}] {case.family}/{case.name}: {status}", file=sys.stderr, flush=True)
    return records


def remeasure(cases: list[Case], records: list[dict[str, Any]], scratch: Path,
              count: int = 12) -> list[dict[str, Any]]:
    """The `count` heaviest cases (forked peak RSS) again, each in a fresh interpreter."""
    by_name = {(case.family, case.name, tuple(case.argv)): case for case in cases}
    heaviest = sorted(records, key=lambda r: r["peak_rss"])[-count:]
    rows = []
    for record in heaviest:
        case = by_name[(record["family"], record["name"], tuple(record["argv"]))]
        before = file_state(case.inputs)
        outcome = run_fresh(case, scratch)
        rows.append({"family": case.family, "name": case.name, "forked_rss": record["peak_rss"],
                     "fresh_rss": outcome.peak_rss, "seconds": outcome.seconds,
                     "problems": judge(case, outcome, before)})
    return rows


def summarize(records: list[dict[str, Any]], seed: int, scale: int, heavy: bool, baseline_rss: int,
              elapsed: float, fresh: list[dict[str, Any]] | None = None) -> str:
    by_family: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_family[record["family"]].append(record)
    rows = []
    for family in FAMILIES:
        group = by_family.get(family)
        if not group:
            continue
        worst = max(group, key=lambda r: r["peak_rss"])
        passed = sum(not r["problems"] for r in group)
        rows.append(f"| {family} | {len(group):,} | {passed:,} | {100 * passed / len(group):.1f}% | "
                    f"{worst['peak_rss'] / 2**20:,.0f} MiB (`{worst['name'][:48]}`) | "
                    f"{max(r['seconds'] for r in group):.2f} |")
    total = len(records)
    passed = sum(not r["problems"] for r in records)
    executed = sum("PICKLE PAYLOAD EXECUTED" in r["problems"] for r in records)
    peak = max(records, key=lambda r: r["peak_rss"])
    codes = Counter(r["code"] for r in records)
    failures = [r for r in records if r["problems"]]
    lines = [
        "# Fuzz campaign: hostile and careless input",
        "",
        f"`python bench/fuzz.py --seed {seed} --scale {scale}{' --heavy' if heavy else ''}` on {platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}; {elapsed / 60:.1f} min.",
        "",
        f"**{total:,} cases, {passed:,} meet the contract ({100 * passed / max(total, 1):.1f}%), "
        f"{executed} pickle payloads executed, peak RSS {peak['peak_rss'] / 2**20:,.0f} MiB** "
        f"(`{peak['family']}/{peak['name']}`, as ru_maxrss of a child forked from a process at "
        f"{baseline_rss / 2**20:,.0f} MiB after importing artifactkit and torch; the heaviest cases are measured "
        "again in fresh processes below).",
        "",
        "Contract of an error case: exit 2, exactly one `error:` line (the last on stderr; other lines only "
        "`notice:`/`warning:`), no traceback or library warning, nothing written, the input unchanged, no pickle "
        "payload executed, peak RSS < 2 GiB, < 60 s. Cases expected to succeed (NaN kept in fp16, notices for "
        "extreme magnitudes, at-cap inputs) must exit 0 with the expected notice. The exported loader must raise "
        "ValueError.",
        "",
        "| family | cases | meet the contract | share | peak RSS (case) | slowest s |",
        "|---|---:|---:|---:|---|---:|",
        *rows,
        "",
        f"Exit codes: {', '.join(f'{code}: {count:,}' for code, count in sorted(codes.items()))}.",
        "",
    ]
    if fresh:
        fresh_peak = max(row["fresh_rss"] for row in fresh)
        lines += ["## The heaviest cases again, each in a fresh process", "",
                  f"`python -m artifactkit ...` (the loader: `python -c` executing it), so imports count: the "
                  f"largest peak RSS is **{fresh_peak / 2**20:,.0f} MiB**.", "",
                  "| case | forked peak RSS | fresh-process peak RSS | s | contract |", "|---|---:|---:|---:|---|"]
        lines += [f"| `{row['family']}/{row['name'][:60]}` | {row['forked_rss'] / 2**20:,.0f} MiB | "
                  f"{row['fresh_rss'] / 2**20:,.0f} MiB | {row['seconds']:.1f} | "
                  f"{'met' if not row['problems'] else '; '.join(row['problems'])} |" for row in fresh]
        lines.append("")
    if failures:
        lines += ["## Failures", ""] + [f"- `{r['family']}/{r['name']}`: {'; '.join(r['problems'])}"
                                        for r in failures[:50]] + [""]
    lines += ["Families and what each case does: see the docstring of `bench/fuzz.py`; "
              "`tests/artifactkit/test_fuzz.py` runs ~500 of the same cases in CI."]
    return "\n".join(lines) + "\n"


def find_tokenizer() -> str | None:
    candidate = REPO.parent / "shared" / "tokenizers" / "fineweb_1024_bpe.model"
    return str(candidate) if candidate.exists() else None


def current_rss() -> int:
    """This process's resident set now, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=10, help="multiplies the generated families (10: ~2,900 cases)")
    parser.add_argument("--cases", type=int, default=None, help="run only the first N cases (after shuffling)")
    parser.add_argument("--heavy", action="store_true", help="the issue's 4 GB bombs and at-cap inputs too")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate (default: a temp folder)")
    parser.add_argument("--output", type=Path, default=REPO / "reports" / "fuzz.md")
    parser.add_argument("--quick", action="store_true", help="scale 1; the report is printed, not written")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import tempfile

    scale = 1 if args.quick else args.scale
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="akit-fuzz-"))
    if args.generate_only:  # in its own process, so that the forking one never ran torch ops
        cases = build_cases(workdir, args.seed, scale, find_tokenizer(), args.heavy)
        (workdir / "manifest.json").write_text(json.dumps([asdict(case) for case in cases]))
        return
    start = time.perf_counter()
    command = [sys.executable, __file__, "--generate-only", "--workdir", str(workdir), "--seed", str(args.seed),
               "--scale", str(scale)] + (["--heavy"] if args.heavy else [])
    import subprocess

    subprocess.run(command, check=True)
    cases = [Case(**record) for record in json.loads((workdir / "manifest.json").read_text())]
    random.Random(args.seed).shuffle(cases)
    if args.cases:
        cases = cases[: args.cases]
    import artifactkit.cli  # noqa: F401 - imported once, before forking

    baseline = current_rss()
    print(f"{len(cases):,} cases in {workdir} ({time.perf_counter() - start:.0f} s to generate); "
          f"forking from {baseline / 2**20:,.0f} MiB", file=sys.stderr)
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    records = campaign(cases, scratch)
    fresh = remeasure(cases, records, scratch)
    report = summarize(records, args.seed, scale, args.heavy, baseline, time.perf_counter() - start, fresh)
    print(report)
    (workdir / "records.json").write_text(json.dumps(records, indent=1, default=str))
    if not args.quick:
        args.output.write_text(report, encoding="utf-8")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if all(not r["problems"] for r in records) else 1)


if __name__ == "__main__":
    main()
