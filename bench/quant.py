"""Quantization damage at equal bits: round-to-nearest with the seed's own clip rule (one
percentile per tensor, scale floored at 1/levels: what `--policy seed` packs), our per-row
percentile and std clips, and GPTQ, on a checkpoint trained by `train` on this
machine. Every method is measured in the same run on the same tokens:

    python bench/quant.py [--run-dir runs/bench_quant] [--iterations 300] [--calib-seqs 64]

Trains `python -m train --preset tiny --iterations N --out RUN_DIR` first when
RUN_DIR/ckpt.pt is missing. For every bit setting (int6, int4, and the mixed policy:
attn + mlp int6, embed + other int8) and every method it packs a real artifact
(lzma), reads it back, loads the dequantized weights into the model and measures
val_bpb on the run's validation shard; Δbpb = roundtrip − float. Calibration for GPTQ
uses TRAINING shards only. The tiny preset's matrices are all at or below the
default small-tensor threshold (65,536 elements, stored fp16), so the bench lowers it
(`--small-threshold`, default 4,096) so that every matrix is quantized.

Also runs `artifactkit fit` (both damage proxies) with the byte size of the uniform
int6 and int4 GPTQ artifacts as the budget, and reports its Δbpb at that size. Prints
a markdown table; writes reports/quant_gptq.md.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, installed or not

from artifactkit.checkpoint import load_checkpoint  # noqa: E402
from artifactkit.errors import CheckFailed  # noqa: E402
from artifactkit.fit.pipeline import DAMAGE_CHOICES, FitOptions, fit_checkpoint  # noqa: E402
from artifactkit.format.akit import pack_state_dict  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.io import atomic_write_text  # noqa: E402
from artifactkit.plan.banks import expand_banks  # noqa: E402
from artifactkit.plan.classify import classify_state_dict  # noqa: E402
from artifactkit.plan.clip_rules import parse_clip_rule  # noqa: E402
from artifactkit.plan.policy import Policy, int_scheme  # noqa: E402
from artifactkit.quantize.calibration import tokens_from_shards  # noqa: E402
from artifactkit.quantize.gptq import DEFAULT_BLOCK_SIZE, collect_hessians, gptq_quantize  # noqa: E402
from artifactkit.roundtrip.evaluate import load_val_tokens  # noqa: E402
from artifactkit.roundtrip.model_factory import build_model  # noqa: E402
from eval.bpb import build_byte_tables  # noqa: E402
from eval.evaluate import evaluate_bpb  # noqa: E402
from eval.runtime import load_tokenizer  # noqa: E402

FIT_CLIPS = ("percentile",)  # one clip keeps the fit rows to a few minutes on a shared CPU
FIT_BITS = (3, 4, 5, 6, 7, 8)  # 3 bits lets a plan reach the uniform int4 artifact's size
ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "quant_gptq.md"
CATEGORIES = ("attn", "mlp", "embed", "other")
SETTINGS = {  # bit width per category
    "int6": {"attn": 6, "mlp": 6, "embed": 6, "other": 6},
    "int4": {"attn": 4, "mlp": 4, "embed": 4, "other": 4},
    "int6-mixed (attn/mlp 6, embed/other 8)": {"attn": 6, "mlp": 6, "embed": 8, "other": 8},
    # Separates the matrices GPTQ sees fully (attn, mlp) from the embedding tables.
    "int4 attn/mlp (embed/other 8)": {"attn": 4, "mlp": 4, "embed": 8, "other": 8},
}
# (label, clip rule, GPTQ: None for round-to-nearest | (act_order, search_clip)) — the
# first is the seed's method (its packer's clip rule exactly, tests/artifactkit/
# test_seed_policy.py), the baseline of the ratio; "percentile" is our per-row refinement. `search_clip` picks each row's
# clip among the rule's candidates by the GPTQ-propagated output error d H d^T instead of
# the row's own rounding MSE (`artifactkit.gptq.gptq_quantize`).
METHODS = (
    ("RTN, seed's rule: one percentile per tensor, scale >= 1/levels (seed)", "seed", None),
    ("RTN, per-row percentile clip", "percentile", None),
    ("RTN, std clip k=12.5", "std:12.5", None),
    ("RTN, std clip k searched per row (mse)", "mse", None),
    ("GPTQ, percentile clip", "percentile", (False, False)),
    ("GPTQ, std clip k searched per row (mse)", "mse", (False, False)),
    ("GPTQ act-order, percentile clip", "percentile", (True, False)),
    ("GPTQ, percentile clip searched through GPTQ", "percentile", (False, True)),
    ("GPTQ, mse clip searched through GPTQ", "mse", (False, True)),
    ("GPTQ act-order, mse clip searched through GPTQ", "mse", (True, True)),
    # The embedding tables take the mse clip (the bigram table, a lookup without a
    # Hessian, by its own rounding MSE; the tied token embedding through GPTQ), the
    # attn / mlp / other matrices the seed's percentile candidates, all searched through GPTQ.
    ("GPTQ act-order, clip searched through GPTQ (embed mse, rest percentile)",
     {"attn": "percentile", "mlp": "percentile", "embed": "mse", "other": "percentile"}, (True, True)),
)
# The GPTQ variant this bench recommends, fixed here rather than re-picked each run as the
# best of the rows. It was chosen in the issue-7 experiments on this same checkpoint and
# validation shard (consistent with 64 and 256 calibration sequences), so its ratio carries
# some selection bias; the report says so.
RECOMMENDED = "GPTQ act-order, clip searched through GPTQ (embed mse, rest percentile)"


def ensure_checkpoint(run_dir: Path, iterations: int) -> Path:
    checkpoint = run_dir / "ckpt.pt"
    if not checkpoint.is_file():
        print(f"training: python -m train --preset tiny --iterations {iterations} --out {run_dir}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "train", "--preset", "tiny", "--iterations", str(iterations),
                        "--out", str(run_dir)], cwd=ROOT, check=True)
    return checkpoint


def clips_by_category(clip: str | dict[str, str]) -> dict[str, str]:
    """A method's clip rule per category (one string means the same rule everywhere)."""
    return dict.fromkeys(CATEGORIES, clip) if isinstance(clip, str) else {category: clip[category] for category in CATEGORIES}


def policy_for(bits: dict[str, int], clip: str | dict[str, str], small_threshold: int) -> Policy:
    clips = clips_by_category(clip)
    schemes = {category: int_scheme(bits[category], clips[category]) for category in CATEGORIES}
    return Policy("bench", schemes, clip_for=clips, small_threshold=small_threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench_quant")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--calib-seqs", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--small-threshold", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-val-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: best on a shared 2-core box)")
    parser.add_argument("--no-fit", action="store_true", help="skip the `fit` row")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    checkpoint_path = ensure_checkpoint(args.run_dir, args.iterations)
    checkpoint = load_checkpoint(checkpoint_path)
    config = dict(checkpoint.config or {})
    sp, _ = load_tokenizer(args.run_dir / "tokenizer.model")
    tables = build_byte_tables(sp, vocab_size=config.get("vocab_size"))
    val_tokens = load_val_tokens(str(args.run_dir / "data" / "val_*.bin"))
    train_glob = str(args.run_dir / "data" / "train_*.bin")

    def val_bpb(state_dict: dict[str, torch.Tensor]) -> float:
        model = build_model(checkpoint.arch, config, state_dict, where=str(checkpoint_path))
        result = evaluate_bpb(model, val_tokens, tables, seq_len=args.seq_len, max_tokens=args.max_val_tokens)
        return result.val_bpb

    float_bpb = val_bpb(checkpoint.state_dict)
    print(f"float val_bpb {float_bpb:.6f}", file=sys.stderr)

    model = build_model(checkpoint.arch, config, checkpoint.state_dict, where=str(checkpoint_path))
    calibration = tokens_from_shards(train_glob, args.calib_seqs, args.seq_len, args.seed)
    hessians = collect_hessians(model, [calibration[i : i + 8] for i in range(0, len(calibration), 8)], "cpu")
    expanded, _ = expand_banks(checkpoint.state_dict)
    classification = classify_state_dict(expanded, None, args.small_threshold)
    categories = {info.name: info.category for info in classification.tensors}

    gptq_cache: dict[tuple[str, int, str, bool, bool], tuple[torch.Tensor, torch.Tensor]] = {}
    gptq_seconds = 0.0

    def gptq_codes(clip: str | dict[str, str], policy: Policy, act_order: bool,
                   search_clip: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        nonlocal gptq_seconds
        out = {}
        for name, hessian in hessians.items():
            tensor = expanded.get(name)
            if tensor is None:
                continue
            scheme, _ = policy.scheme_for(name, categories[name], tensor)
            if scheme.kind != "int":
                continue
            rule = clips_by_category(clip)[categories[name]]
            key = (name, int(scheme.bits), rule, act_order, search_clip)
            if key not in gptq_cache:
                begin = time.perf_counter()
                gptq_cache[key] = gptq_quantize(tensor, hessian, int(scheme.bits), parse_clip_rule(rule),
                                                act_order=act_order, search_clip=search_clip, name=name)
                gptq_seconds += time.perf_counter() - begin
            out[name] = gptq_cache[key]
        return out

    rows = []
    sizes: dict[tuple[str, str], int] = {}
    for setting, bits in SETTINGS.items():
        for label, clip, use_gptq in METHODS:
            policy = policy_for(bits, clip, args.small_threshold)
            precomputed = gptq_codes(clip, policy, *use_gptq) if use_gptq else None
            packed = pack_state_dict(checkpoint.state_dict, policy, "lzma", precomputed=precomputed)
            restored = read_artifact(packed.data).state_dict()
            bpb = val_bpb(restored)
            sizes[(setting, label)] = packed.artifact_bytes
            rows.append((setting, label, packed.artifact_bytes, bpb, bpb - float_bpb))
            print(f"{setting:40s} {label:42s} {packed.artifact_bytes:>9,d} B  bpb {bpb:.6f}  "
                  f"delta {bpb - float_bpb:+.6f}", file=sys.stderr)

    fit_rows = []
    for budget_label in ([] if args.no_fit else ["int6", "int4"]):
        budget = sizes[(budget_label, "GPTQ, percentile clip")]
        for damage in DAMAGE_CHOICES:
            options = FitOptions(budget=budget, calib=train_glob, calib_seqs=args.calib_seqs, seq_len=args.seq_len,
                                 seed=args.seed, small_threshold=args.small_threshold, codec="lzma",
                                 clip_choices=FIT_CLIPS, bits_choices=FIT_BITS, damage=damage)
            begin = time.perf_counter()
            try:
                fitted = fit_checkpoint(checkpoint_path, options)
            except CheckFailed as exc:  # e.g. plain `hessian` keeps lookup tables at int8
                fit_rows.append((budget_label, damage, budget, None, None, None, {}, None, None,
                                 time.perf_counter() - begin))
                print(f"fit at {budget_label} GPTQ size, {damage}: infeasible ({exc})", file=sys.stderr)
                continue
            fit_seconds = time.perf_counter() - begin
            bpb = val_bpb(read_artifact(fitted.packed.data).state_dict())
            # int widths, and float schemes (fit's keep-float candidates) by name
            counts = Counter(f"int{row['bits']}" if row["bits"] else str(row["scheme"]) for row in fitted.plan_rows())
            fit_rows.append((budget_label, damage, budget, fitted.packed.artifact_bytes, bpb, bpb - float_bpb,
                             dict(sorted(counts.items())), fitted.line.headroom, fitted.smallest_step_bytes,
                             fit_seconds))
            print(f"fit at {budget_label} GPTQ size, {damage}: {fitted.packed.artifact_bytes:,} B bpb {bpb:.6f} "
                  f"delta {bpb - float_bpb:+.6f} widths {dict(sorted(counts.items()))}", file=sys.stderr)

    report = render_report(args, checkpoint, float_bpb, rows, fit_rows, gptq_seconds, time.perf_counter() - started,
                           len(val_tokens))
    print(report)
    atomic_write_text(args.report, report)
    print(f"wrote {args.report}", file=sys.stderr)


def render_report(args, checkpoint, float_bpb, rows, fit_rows, gptq_seconds, seconds, val_count) -> str:
    seed_delta = {setting: delta for setting, label, _, _, delta in rows if label == METHODS[0][0]}
    seed_bytes = {setting: size for setting, label, size, _, _ in rows if label == METHODS[0][0]}
    lines = [
        "# Quantization damage at equal bits: RTN (percentile / std clip) vs GPTQ",
        "",
        f"Generated by `python bench/quant.py` in {seconds:.0f} s on {platform.machine()} "
        f"({platform.processor() or 'cpu'}), torch {torch.__version__}, {args.threads} thread(s).",
        "",
        f"- checkpoint: `{args.run_dir / 'ckpt.pt'}` (`python -m train --preset tiny --iterations {args.iterations}`,"
        f" step {checkpoint.step}, {checkpoint.num_params:,} parameters)",
        f"- val: `{args.run_dir / 'data' / 'val_*.bin'}`, {val_count:,} tokens"
        + (f" (first {args.max_val_tokens:,} scored)" if args.max_val_tokens else "")
        + f", seq_len {args.seq_len}, standard windows; float val_bpb **{float_bpb:.6f}**",
        f"- GPTQ calibration: {args.calib_seqs} x {args.seq_len} tokens from the TRAINING shard (seed {args.seed}),"
        f" block {DEFAULT_BLOCK_SIZE}, damp 0.01; GPTQ time {gptq_seconds:.1f} s for all (tensor, bits, clip) combinations",
        f"- every matrix above {args.small_threshold:,} elements is quantized (the tiny preset's matrices are all "
        "below the default 65,536 threshold); control tensors fp32, small ones fp16; codec lzma",
        "- matrices without a Hessian (the BigramHash embedding, a lookup only) are round-to-nearest in every row;"
        " the tied token embedding gets GPTQ from its use as the output head (its lookup side is not in H)",
        f"- baseline of the ratio: **{METHODS[0][0]}**, the seed's packer's clip rule exactly (`--clip seed`, as "
        "`--policy seed` uses it; the bits per row are the setting's, and small / control tensors follow this "
        "bench's policy, not the seed's ordering). \"percentile\" rows pick the best of the same 5 percentiles "
        "per row, without the floor: our refinement, not the seed's method",
        "- \"searched through GPTQ\": every candidate clip of the rule (percentile: the 5 seed percentiles; mse: "
        "k*std for 20 k in 2..20, and max|w|) goes through GPTQ and each row keeps the candidate with the least "
        "calibration output error d H d^T; bits, codes and scales are stored exactly as for any other row",
        "- Δbpb is paired (same tokens, same windows); no confidence interval is computed, so differences of a "
        "few 1e-4 (e.g. among the int6-mixed rows) should not be read as real",
        "",
        "| bits | method | artifact bytes | val_bpb | Δbpb (roundtrip − float) | Δbpb / seed method's Δbpb |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for setting, label, size, bpb, delta in rows:
        ratio = delta / seed_delta[setting] if seed_delta[setting] > 0 else float("nan")
        lines.append(f"| {setting} | {label} | {size:,} | {bpb:.6f} | {delta:+.6f} | {ratio:.2f} |")
    lines += ["", "## Goal: GPTQ Δbpb ≤ half of the seed method's at the same bits", ""]
    lines.append(f"Recommended variant (fixed in the bench, not re-picked per run; chosen in the issue-7 experiments "
                 f"on this checkpoint and val shard, so it carries some selection bias): **{RECOMMENDED}**. "
                 "Bytes are the whole lzma artifact; at the same bits a clip that uses more of the code range "
                 "compresses less, so the byte change against the seed method is given next to each ratio.")
    lines.append("")
    for setting in SETTINGS:
        seed = seed_delta[setting]
        gptq = {label: delta for s, label, _, _, delta in rows if s == setting and label.startswith("GPTQ")}
        gptq_bytes = {label: size for s, label, size, _, _ in rows if s == setting and label.startswith("GPTQ")}
        best_label, best = min(gptq.items(), key=lambda item: item[1])
        same_clip = gptq["GPTQ, percentile clip"]
        chosen = gptq[RECOMMENDED]
        byte_change = gptq_bytes[RECOMMENDED] / seed_bytes[setting] - 1
        if seed <= 0:
            lines.append(f"- {setting}: seed Δ {seed:+.6f} is not above zero (within evaluation noise), so the "
                         f"ratio is undefined; GPTQ Δ {same_clip:+.6f}, recommended Δ {chosen:+.6f} "
                         "-> **undetermined**")
            continue
        verdict = "met" if chosen <= 0.5 * seed else "NOT met"
        lines.append(f"- {setting}: seed Δ {seed:+.6f}; **recommended Δ {chosen:+.6f} (ratio {chosen / seed:.2f}, "
                     f"bytes {byte_change:+.1%} vs seed) -> {verdict}**; GPTQ with the per-row percentile clip "
                     f"Δ {same_clip:+.6f} (ratio {same_clip / seed:.2f}); lowest GPTQ row ({best_label}) "
                     f"Δ {best:+.6f} (ratio {best / seed:.2f})")
    if fit_rows:
        lines += ["", "## `artifactkit fit` at the size of the uniform GPTQ artifacts", "",
                  f"Budget = the uniform GPTQ-percentile artifact's bytes; fit picks bits per matrix from GPTQ "
                  f"candidates (bits {', '.join(map(str, FIT_BITS))}; clip {', '.join(FIT_CLIPS)}) under each damage proxy.", "",
                  "| budget (= GPTQ artifact of) | damage proxy | artifact bytes | headroom | smallest step | "
                  "matrices per width | val_bpb | Δbpb | uniform GPTQ Δbpb | fit time |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        uniform = {setting: delta for setting, label, _, _, delta in rows if label == "GPTQ, percentile clip"}
        for setting, damage, budget, size, bpb, delta, counts, headroom, step, fit_seconds in fit_rows:
            if size is None:
                lines.append(f"| {setting} ({budget:,}) | {damage} | infeasible: the smallest plan is larger "
                             f"(matrices without a Hessian stay at the policy's int8) | | | | | | "
                             f"{uniform[setting]:+.6f} | {fit_seconds:.0f} s |")
                continue
            widths = ", ".join(f"{kind}: {count}" for kind, count in counts.items())
            lines.append(f"| {setting} ({budget:,}) | {damage} | {size:,} | {headroom:,} | "
                         f"{'none' if step is None else f'{step:,}'} | {widths} | {bpb:.6f} | {delta:+.6f} | "
                         f"{uniform[setting]:+.6f} | {fit_seconds:.0f} s |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
