"""The exported standalone loader: small, imports nothing from this project, and loads
every scheme and codec bit-exactly -- checked in a separate Python process that can
import only the exported file (artifactkit, train and eval imports are blocked there)."""

from __future__ import annotations

import ast
import hashlib
import json
import struct
import subprocess
import sys
import zlib

import pytest
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.format.akit import MAGIC, PREAMBLE, pack_state_dict, write_artifact
from artifactkit.format.ans_decoder_src import DECODER_SOURCE
from artifactkit.format.codecs import available_codecs
from artifactkit.format.loader_export import build_loader, loader_sizes
from artifactkit.format.reader import read_artifact
from artifactkit.plan.policy import resolve_policy

# The sizes this project promises (README / export-loader --help state the exact numbers).
# Validating hostile input (bounded reads and decompression, section order, dtypes,
# names, shapes, banks) costs ~1.0 KB over the unchecked loader (3,470 / 6,662 bytes);
# the AKC3 codes model (row + column scale levels) ~320 bytes more in the default one,
# AKC4's reference rows ~600 more (they save 15-85 KB on the trained models in reports/ans_real.md),
# AKC5's prototype rows ~530 more (3-25 KB more saved on four of those six code sets),
# bounded decoding memory ~120 more, and AKC6's remainder contexts ~1,080 more (~11 KB saved on
# fit's mixed-width artifact of a 6M model, 0.6 % of its codes; nothing on all-int6 artifacts).
LZMA_ONLY_LIMIT = 4_500
DEFAULT_LIMIT = 10_400
ALLOWED_IMPORTS = {"hashlib", "json", "math", "struct", "zlib", "lzma", "numpy", "torch", "zstandard", "brotli"}

# Every int width via --bits-for (which applies to small tensors too, keeping the test
# fast), plus fp16, fp32 and raw by the default policy's rules.
BITS_FOR = ("b\\.0\\.a\\.q=2", "b\\.1\\.a\\.q=3", "b\\.0\\.a\\.o=4", "b\\.1\\.a\\.o=5", "b\\.0\\.m\\.d=6",
            "b\\.0\\.m\\.u=7", "tok_emb=8")

RUNNER_SCRIPT = r"""
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("artifactkit", "train", "eval"):
            raise ImportError("the standalone loader must not import " + name)
sys.meta_path.insert(0, Block())
import torch
loader_path, out_path, *artifacts = sys.argv[1:]
spec = importlib.util.spec_from_file_location("exported_loader", loader_path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
results = {}
for path in artifacts:
    try:
        results[path] = module.load_artifact(path)
    except ValueError as error:
        results[path] = str(error)
assert not [m for m in sys.modules if m.split(".")[0] in ("artifactkit", "train", "eval")]
torch.save(results, out_path)
"""


def mixed_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {
        "tok_emb.weight": torch.randn(96, 64, generator=generator) * 0.02,
        "qo_bank": torch.randn(4, 32, 64, generator=generator) * 0.05,  # banks: b.{0,1}.a.{q,o}
        "mlp_up_bank": torch.randn(2, 96, 64, generator=generator).to(torch.bfloat16),
        "b.0.m.d": (torch.randn(64, 96, generator=generator) * 0.03).to(torch.float64),
        "b.0.a.k": torch.randn(16, 64, generator=generator).to(torch.float16),  # small: fp16
        "skip_w": torch.randn(3, 8, generator=generator, dtype=torch.float64),  # control: fp32
        "bigram.scale": torch.tensor(0.05),  # 0-d control
        "step_count": torch.tensor([7, -3, 2**40], dtype=torch.int64),
        "mask": torch.tensor([[True, False], [False, True]]),
        "token_ids": torch.arange(10, dtype=torch.int32).reshape(2, 5),
        "bytes_table": torch.arange(6, dtype=torch.uint8),
    }


def bit_identical(left: torch.Tensor, right: torch.Tensor) -> bool:
    return (left.dtype == right.dtype and left.shape == right.shape
            and torch.equal(left.reshape(-1).view(torch.uint8), right.reshape(-1).view(torch.uint8)))


def run_loader(tmp_path, loader_text: str, artifacts: list) -> dict:
    loader, script, out = tmp_path / "exported_loader.py", tmp_path / "run_loader.py", tmp_path / "loaded.pt"
    loader.write_text(loader_text, encoding="utf-8")
    script.write_text(RUNNER_SCRIPT, encoding="utf-8")
    result = subprocess.run([sys.executable, "-I", str(script), str(loader), str(out), *map(str, artifacts)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return torch.load(out, weights_only=True)


def test_exported_loader_is_small_and_imports_only_torch_numpy_stdlib():
    sizes = loader_sizes()
    assert sizes["lzma"] < LZMA_ONLY_LIMIT, sizes
    assert sizes["default"] < DEFAULT_LIMIT, sizes
    for codecs in ("lzma", None, "all"):
        tree = ast.parse(build_loader(codecs).text)
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= ALLOWED_IMPORTS, imported
        assert "load_artifact" in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "zstandard" not in build_loader(None).text and "decode_codes" in build_loader(None).text
    assert "decode_codes" not in build_loader("lzma").text


def test_exported_loader_loads_every_scheme_and_codec_bit_exactly(tmp_path):
    state = mixed_state_dict()
    policy = resolve_policy("int6-mixed", bits_for=BITS_FOR)
    codecs = [c for c in ("lzma", "zstd", "zlib", "brotli", "raw") if c in available_codecs()] + ["ans", "auto"]
    artifacts = []
    for codec in codecs:
        path = tmp_path / f"model-{codec}.akit"
        write_artifact(path, pack_state_dict(state, policy, codec))
        artifacts.append(path)
    labels = {t.label for t in read_artifact(artifacts[0]).tensors}
    assert {"int2", "int3", "int4", "int5", "int6", "int7", "int8", "fp16", "fp32", "raw"} <= labels
    assert read_artifact(tmp_path / "model-ans.akit").header["sections"][0]["codec"] == "ans"

    # the full loader reads everything; the lzma-only one reads lzma and refuses ans with a clear message
    loaded = run_loader(tmp_path, build_loader("all").text, artifacts)
    for path in artifacts:
        expected = read_artifact(path).state_dict()
        got = loaded[str(path)]
        assert list(got) == list(expected), path
        for name in expected:
            assert bit_identical(got[name], expected[name]), (path, name)
    assert set(expected) == set(state)  # banks restored under their own names

    small = run_loader(tmp_path, build_loader("lzma").text, [artifacts[0], tmp_path / "model-ans.akit"])
    assert all(bit_identical(small[str(artifacts[0])][n], t) for n, t in read_artifact(artifacts[0]).state_dict().items())
    assert "codec ans is not in this loader" in small[str(tmp_path / "model-ans.akit")]


def test_export_loader_command_writes_the_module_and_states_its_size(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(main, ["export-loader", "--help"]).output
    sizes = loader_sizes()
    assert f"{sizes['lzma']:,} bytes" in help_text and f"{sizes['default']:,} bytes" in help_text
    out = tmp_path / "loader.py"
    result = runner.invoke(main, ["export-loader", "-o", str(out), "--codecs", "lzma,zstd", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["loader_bytes"] == out.stat().st_size == len(out.read_bytes())
    assert "zstandard" in document["third_party_modules"] and "import zstandard" in out.read_text()

    artifact = tmp_path / "m.akit"
    write_artifact(artifact, pack_state_dict(mixed_state_dict(), codec="zlib"))
    result = runner.invoke(main, ["export-loader", "--artifact", str(artifact)])
    assert result.exit_code == 0 and '"zlib": lambda b, n: zlib.' in result.stdout and "lzma" not in result.stdout
    result = runner.invoke(main, ["export-loader", "--codecs", "lzma,snappy"])
    assert result.exit_code == 2 and "error: --codecs" in result.stderr

    # counted with --code, the loader's bytes are part of check's total
    checked = json.loads(runner.invoke(main, ["check", str(artifact), "--code", str(out), "--json"]).stdout)
    assert checked["code_bytes"] == out.stat().st_size
    assert checked["total_bytes"] == artifact.stat().st_size + out.stat().st_size


@pytest.mark.parametrize("damage", ["magic", "payload"])
def test_exported_loader_rejects_damaged_files(tmp_path, damage):
    artifact = tmp_path / "m.akit"
    data = bytearray(pack_state_dict(mixed_state_dict(), codec="zlib").data)
    data[0 if damage == "magic" else -5] ^= 0xFF
    artifact.write_bytes(bytes(data))
    namespace: dict = {}
    exec(compile(build_loader("zlib").text, "exported_loader", "exec"), namespace)
    with pytest.raises(ValueError, match="not an akit/1 artifact" if damage == "magic" else "sha256 mismatch"):
        namespace["load_artifact"](str(artifact))


def _lie(data: bytes, edit, swap: tuple[int, int] | None = None) -> bytes:
    """The artifact with its header edited (and optionally two sections' records and bytes
    swapped), the payload checksum fixed: only the loader's own checks can refuse it."""
    _, version, length = PREAMBLE.unpack_from(data)
    header = json.loads(zlib.decompress(data[PREAMBLE.size : PREAMBLE.size + length]))
    payload = data[PREAMBLE.size + length :]
    if swap:
        parts, offset = [], 0
        for section in header["sections"]:
            parts.append(payload[offset : offset + section["stored_bytes"]])
            offset += section["stored_bytes"]
        first, second = swap
        header["sections"][first], header["sections"][second] = header["sections"][second], header["sections"][first]
        parts[first], parts[second] = parts[second], parts[first]
        payload = b"".join(parts)
    edit(header)
    header.update(payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    block = zlib.compress(json.dumps(header).encode())
    return PREAMBLE.pack(MAGIC, version, len(block)) + block + payload


def _named(header, name):
    return next(t for t in header["tensors"] if t["name"] == name)


HOSTILE = {  # name -> (codec, edit, swap, what the loader's error says)
    "float8": ("zlib", lambda h: _named(h, "skip_w").update(dtype="float8_e4m3fn"), None, "tensor skip_w"),
    "complex": ("zlib", lambda h: _named(h, "b.0.a.k").update(dtype="complex64"), None, "tensor b.0.a.k"),
    "attribute": ("zlib", lambda h: _named(h, "skip_w").update(dtype="save"), None, "tensor skip_w"),
    "duplicate": ("zlib", lambda h: _named(h, "skip_w").update(name="bigram.scale"), None, "tensor bigram.scale"),
    "reordered": ("raw", lambda h: None, (2, 3), "bad section order"),
    "renamed": ("raw", lambda h: h["sections"][4].update(name="fp32"), None, "ValueError: "),
    "shape-lie": ("zlib", lambda h: _named(h, "skip_w").update(shape=[2, 8]), None, "shapes and sections disagree"),
    "negative": ("zlib", lambda h: _named(h, "skip_w").update(shape=[-3, 8]), None, "tensor skip_w"),
    "ans-2^31": ("ans", lambda h: h["tensors"][0].update(shape=[1 << 16, 1 << 15]), None, "bad codes section"),
    "ans-tables": ("ans", lambda h: None, None, "bad codes section"),
    "raw-negative": ("zlib", lambda h: h["sections"][2].update(raw_bytes=-1), None, "bad section sizes"),
    "raw-3GB": ("zlib", lambda h: h["sections"][3].update(raw_bytes=3 << 30), None, "bad section sizes"),
    "bank-missing": ("zlib", lambda h: h["banks"][0]["members"].__setitem__(0, "nope"), None, "KeyError"),
    "bank-shape": ("zlib", lambda h: h["banks"][0].update(shape=[4, 64, 32]), None, "bank shape"),
    "bank-twice": ("zlib", lambda h: h["banks"].append(dict(h["banks"][0], name="b2")), None, "bad bank records"),
    "bank-name-taken": ("zlib", lambda h: h["banks"][0].update(name="skip_w"), None, "bad bank records"),
    "scheme": ("zlib", lambda h: _named(h, "skip_w").update(scheme="codes"), None, "KeyError"),
}


def test_exported_loader_refuses_hostile_headers_with_one_value_error(tmp_path):
    """The loader repeats the reader's checks: lying dtypes, names, shapes, section order,
    sizes and bank records are each one ValueError naming the file -- never a float8 or
    complex tensor, a silently different tensor, or an allocation the file does not hold."""
    policy = resolve_policy("int6-mixed", bits_for=BITS_FOR)
    bases = {codec: pack_state_dict(mixed_state_dict(), policy, codec).data for codec in ("zlib", "raw", "ans")}
    paths = []
    for name, (codec, edit, swap, _) in HOSTILE.items():
        data = _lie(bases[codec], edit, swap)
        if name == "ans-tables":  # the rANS blob asks for 65,535 tables of 2**15 int64 entries
            length = PREAMBLE.unpack_from(data)[2]
            start = PREAMBLE.size + length
            data = data[: start + 6] + struct.pack("<H", 65535) + data[start + 8 :]
            data = _lie(data, lambda h: None)
        path = tmp_path / f"{name}.akit"
        path.write_bytes(data)
        paths.append(path)
        with pytest.raises(InputError):  # the library refuses each one too
            read_artifact(path)
    loaded = run_loader(tmp_path, build_loader("all", lowrank=True).text, paths)
    for path, (name, (_, _, _, message)) in zip(paths, HOSTILE.items(), strict=True):
        result = loaded[str(path)]
        assert isinstance(result, str) and result.startswith(f"{path}: ") and message in result, (name, result)


def test_exported_loader_bounds_what_it_reads_and_decompresses(tmp_path):
    bomb = tmp_path / "bomb.akit"
    data = _lie(pack_state_dict({"skip_w": torch.zeros(300, 300)}, codec="zlib").data, lambda h: None)
    length = PREAMBLE.unpack_from(data)[2]
    header = json.loads(zlib.decompress(data[PREAMBLE.size : PREAMBLE.size + length]))
    stream = zlib.compress(bytes(64 << 20), 1)  # declared: 360,000 bytes

    def inflate(h):
        h["sections"][3]["stored_bytes"] = len(stream)

    payload = b"".join([stream if s["name"] == "fp32" else b"" for s in header["sections"]])
    _, version, _ = PREAMBLE.unpack_from(data)
    inflate(header)
    header.update(payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    block = zlib.compress(json.dumps(header).encode())
    bomb.write_bytes(PREAMBLE.pack(MAGIC, version, len(block)) + block + payload)
    loaded = run_loader(tmp_path, build_loader("zlib").text, [bomb, "/dev/zero"])
    assert "section fp32 has the wrong size" in loaded[str(bomb)]
    assert "not an akit/1 artifact" in loaded["/dev/zero"]


def test_exported_loader_imports_each_module_once_and_the_decoder_stays_standalone():
    for codecs in ("lzma", None, "all"):
        tree = ast.parse(build_loader(codecs, lowrank=True).text)
        imported = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
        assert len(imported) == len(set(imported)), imported
        assert {"lzma", "numpy", "torch", "zlib"} <= set(imported)
    namespace: dict = {}
    exec(compile(DECODER_SOURCE, "decoder", "exec"), namespace)  # alone, as artifactkit.format.ans runs it
    assert callable(namespace["decode_codes"])
