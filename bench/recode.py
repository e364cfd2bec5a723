"""Benchmark: the frontier's artifacts re-encoded with the current codes coder.

bench/frontier.py measures Δbpb per artifact; the bytes depend on the quantized codes AND on
the coder that stored them. When only the coder changes (AKC3 -> AKC4 reference rows, AKC5 prototype rows,
AKC6 remainder contexts),
re-measuring Δbpb is unnecessary: this script reads every `.akit` point of a frontier run
whose codes section is `ans`, re-encodes the same quantized model with the current coder,
checks that the codes read back identical (so Δbpb is unchanged by construction), and
tabulates bytes then and now next to the point's measured Δbpb. The record's own artifact
(rows sorted + transposed through lrzip) is listed for scale.

    python bench/recode.py --points runs/frontier/points_B.json [--points ...] [--output reports/frontier_recode.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from artifactkit.format.akit import encode_artifact  # noqa: E402
from artifactkit.format.ans import MAGIC  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.io import atomic_write_text  # noqa: E402

REPORT = REPO / "reports" / "frontier_recode.md"


def recoded_bytes(path: str) -> int | None:
    """Bytes of the artifact at `path` re-encoded now (with its own codec choice), or None when its codes
    section is not ans-coded; SystemExit if the codes do not read back identical."""
    artifact = read_artifact(path)
    if {s["name"]: s["codec"] for s in artifact.header["sections"]}.get("codes") != "ans":
        return None
    model = artifact.quantized_model()
    packed = encode_artifact(model, artifact.header["codec"])  # the same codec choice: only the coder is new
    again = read_artifact(packed.data).quantized_model()
    for before, after in zip(model.entries, again.entries, strict=True):
        if before.scheme.is_int and not np.array_equal(before.quantized.codes.numpy(), after.quantized.codes.numpy()):
            raise SystemExit(f"error: {path}: {before.name} changed when re-encoded")
    return len(packed.data)


def table(points_file: Path) -> list[str]:
    run = json.loads(points_file.read_text(encoding="utf-8"))
    lines = [f"## `{points_file}` (checkpoint {run['points'][0]['checkpoint'] if run['points'] else '?'})", "",
             f"Measured by: `{run['command']}`", "",
             "| pipeline | setting | Δbpb ± se (measured) | bytes then | bytes now | now / then |",
             "|---|---|---:|---:|---:|---:|"]
    for point in run["points"]:
        path = point["path"]
        if not os.path.exists(path):
            continue
        measured = f"{point['delta_bpb']:+.5f} ± {point.get('extra', {}).get('delta_se', math.nan):.5f}"
        if not path.endswith(".akit"):  # the record's own codec: listed for scale
            if point["pipeline"].startswith("record"):
                lines.append(f"| {point['pipeline']} | {point['setting']} ({point['codec']}, for scale) | {measured} | "
                             f"{point['bytes']:,} | | |")
            continue
        now = recoded_bytes(path)
        if now is not None:
            lines.append(f"| {point['pipeline']} | {point['setting']} | {measured} | {point['bytes']:,} | {now:,} | "
                         f"{now / point['bytes']:.4f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", action="append", required=True, type=Path,
                        help="a points_*.json written by bench/frontier.py (repeatable)")
    parser.add_argument("--output", type=Path, default=REPORT)
    options = parser.parse_args()
    text = ["# The frontier's artifacts re-encoded with the current coder", "",
            f"Codes coder now: {MAGIC.decode()} (reference and prototype rows, remainder contexts). Same quantized models, codes checked identical "
            "after re-encoding, so every Δbpb is the one measured; only the bytes change.", ""]
    for points_file in options.points:
        text += table(points_file)
    output = "\n".join(text) + "\n"
    print(output)
    atomic_write_text(options.output, output)


if __name__ == "__main__":
    main()
