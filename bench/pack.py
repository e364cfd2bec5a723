"""Benchmark: `pack` with each codec next to the seed's pipeline, on one checkpoint,
in one process.

The seed's pipeline is `torch.save({"w": codes/scales/passthrough, "m": meta})` of
int8-stored codes followed by `lzma.compress(preset=6)`; it gets the very same
quantized codes as our packer, so only the container and codec differ. The
per-tensor zero-order entropy bound is the sum over int tensors of
numel x H(codes of that tensor) / 8, plus the bytes our packer spends on scales and
small tensors -- the floor for any coder that treats each tensor's codes as i.i.d.

    python bench/pack.py                     # 11 x 512 seed-shaped, ~27M params
    python bench/pack.py --checkpoint ckpt.pt --codecs lzma,zstd,ans
    python bench/pack.py --quick             # 3 layers, for a smoke run

Prints a markdown table and writes it to reports/pack_benchmark.md (--output).
Synthetic heavy-tailed weights are not trained weights; see the report's notes.
"""

from __future__ import annotations

import argparse
import io
import lzma
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from artifactkit.checkpoint import load_checkpoint  # noqa: E402
from artifactkit.format import codecs  # noqa: E402
from artifactkit.format.akit import encode_artifact  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.synthetic import seed_shaped_state_dict  # noqa: E402


def seed_pipeline(model) -> tuple[int, float, float]:
    """(bytes, compress s, decompress s) of torch.save + lzma preset 6."""
    weights, meta = {}, {}
    for entry in model.entries:
        if entry.scheme.kind == "int":
            weights[f"{entry.name}.q"] = entry.quantized.codes
            weights[f"{entry.name}.s"] = entry.quantized.scales
            meta[entry.name] = {"t": f"i{entry.scheme.bits}"}
        else:
            weights[entry.name] = entry.values
            meta[entry.name] = "ctrl" if entry.category == "control" else "pt"
    start = time.perf_counter()
    buffer = io.BytesIO()
    torch.save({"w": weights, "m": meta}, buffer)
    blob = lzma.compress(buffer.getvalue(), preset=6)
    compress_s = time.perf_counter() - start
    start = time.perf_counter()
    torch.load(io.BytesIO(lzma.decompress(blob)), weights_only=True)
    return len(blob), compress_s, time.perf_counter() - start


def entropy_bound(model, side_bytes: int) -> int:
    bits = 0.0
    for entry in model.entries:
        if entry.scheme.kind != "int":
            continue
        codes = entry.quantized.codes.numpy().reshape(-1).astype(np.int16) + 128
        counts = np.bincount(codes, minlength=256)
        p = counts[counts > 0] / codes.size
        bits += float(-(p * np.log2(p)).sum()) * codes.size
    return int(bits / 8) + side_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="pack this checkpoint instead of the synthetic seed-shaped one")
    parser.add_argument("--codecs", default="lzma,zstd,zlib,brotli,ans,auto")
    parser.add_argument("--quick", action="store_true", help="3 layers instead of 11")
    parser.add_argument("--output", default=str(REPO / "reports" / "pack_benchmark.md"))
    args = parser.parse_args()

    if args.checkpoint:
        state, label = load_checkpoint(args.checkpoint).state_dict, args.checkpoint
    else:
        layers = 3 if args.quick else 11
        state, label = seed_shaped_state_dict(layers=layers), f"synthetic seed-shaped {layers} x 512 (Student-t df 4)"
    params = sum(t.numel() for t in state.values())

    start = time.perf_counter()
    model = quantize_state_dict(state)
    quantize_s = time.perf_counter() - start
    seed_bytes, seed_c, seed_d = seed_pipeline(model)

    rows = []
    side_bytes = None
    for codec in args.codecs.split(","):
        if codec == "brotli" and "brotli" not in codecs.CODECS:
            continue
        try:
            start = time.perf_counter()
            packed = encode_artifact(model, codec)
            encode_s = time.perf_counter() - start
        except Exception as exc:  # a codec missing from this build is a row, not a crash
            print(f"skip {codec}: {exc}", file=sys.stderr)
            continue
        start = time.perf_counter()
        read_artifact(packed.data).state_dict()
        unpack_s = time.perf_counter() - start
        if side_bytes is None:
            side_bytes = sum(s["stored_bytes"] for s in packed.header["sections"] if s["name"] != "codes")
        rows.append((codec, packed.artifact_bytes, quantize_s + encode_s, unpack_s))
    bound = entropy_bound(model, side_bytes or 0)

    lines = [
        f"# pack benchmark: {label}",
        "",
        f"{params:,} parameters, policy int6-mixed; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip(),
        f"quantization (shared by every row below): {quantize_s:.2f} s; per-tensor entropy bound: {bound:,} bytes",
        "",
        "| pipeline | bytes | vs seed | vs entropy bound | pack s | unpack s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| seed: torch.save + lzma-6 | {seed_bytes:,} | 1.000 | {seed_bytes / bound:.4f} | "
        f"{quantize_s + seed_c:.2f} | {seed_d:.2f} |",
    ]
    for codec, size, pack_s, unpack_s in rows:
        lines.append(f"| akit {codec} | {size:,} | {size / seed_bytes:.3f} | {size / bound:.4f} | "
                     f"{pack_s:.2f} | {unpack_s:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
