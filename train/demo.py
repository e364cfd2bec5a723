"""The README demo (`artifactkit-demo`): on a fresh CPU machine, in a few minutes,
train a small model twice on the embedded corpus — vanilla cross-entropy and JEPA, at
equal wall time — then run the artifactkit steps on the result, printing every command
before it runs.

The model is the `mid` preset's shape with 2 layers (384 wide, 6 query / 3 key-value
heads): every attention and MLP matrix is above artifactkit's 65,536-element
small-tensor threshold, so `pack` really int6-quantizes them and the roundtrip delta is
the int6 damage, not fp16's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

JEPA_WEIGHT = 0.3
# `mid`'s matrices, two blocks deep, 2,048 tokens a step: ~1.1 s (vanilla) / 1.5 s (JEPA)
# of one CPU core per step, so a 90 s run takes 60-80 steps.
DEMO_MODEL = ["--preset", "mid", "--num-layers", "2", "--batch-tokens", "2048"]
SCALE_NOTE = (
    "What this run can and cannot show: it is the seed's model and objective (same code path as `--preset "
    "seed11`), but at CPU scale — a 2 x 384 model (3.4M parameters in the checkpoint) for a minute or two on "
    "0.4M tokens of Python documentation, against the seed's 11 x 512 (26.8M) trained for 30 minutes on 8 GPUs "
    "(5,751 JEPA / 8,120 vanilla steps of 786,432 FineWeb tokens). Its val_bpb, the A/B gap and its sign say "
    "nothing about the seed's 1.1896 (JEPA) vs 1.1841 (vanilla), and the roundtrip delta is artifactkit's "
    "default int6 policy on these weights, not the seed's packer. `--preset seed11` on 8 GPUs is the seed's "
    "experiment."
)


def _artifactkit_prefix() -> list[str]:
    """How to invoke the artifactkit CLI from this interpreter's environment."""
    beside = Path(sys.executable).with_name("artifactkit")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("artifactkit")
    if found:
        return [found]
    return [sys.executable, "-c", "from artifactkit.cli import main; main()"]


def _shown(command: list[str]) -> str:
    shown = list(command)
    if shown[0] == sys.executable:
        shown[0] = "python"
    elif Path(shown[0]).name == "artifactkit":
        shown[0] = "artifactkit"
    return shlex.join(shown)


def _run(command: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    click.secho(f"\n$ {_shown(command)}", bold=True)
    sys.stdout.flush()
    return subprocess.run(command, text=True, capture_output=capture)


def _train(out: Path, name: str, jepa_weight: float, iterations: int, wall_s: float, threads: int) -> Path:
    run_dir = out / name
    command = [sys.executable, "-m", "train", *DEMO_MODEL, "--out", str(run_dir),
               "--jepa-weight", str(jepa_weight), "--iterations", str(iterations), "--log-every", "5",
               "--val-every", "25", "--max-wall-s", str(wall_s)]
    if threads:
        command += ["--cpu-threads", str(threads)]
    result = _run(command)
    if result.returncode != 0:
        raise click.ClickException(f"training {name} failed (exit {result.returncode}); see the output above")
    return run_dir


def _summary(runs: dict[str, Path], equal: str) -> None:
    import torch

    click.secho(f"\nA/B at equal {equal} (final weights, embedded-corpus validation set):", bold=True)
    click.echo("| run | steps | train s | val_loss | val_bpb |")
    click.echo("|---|---:|---:|---:|---:|")
    for name, run_dir in runs.items():
        checkpoint = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
        metrics = checkpoint["metrics"]
        click.echo(f"| {name} | {checkpoint['step']} | {metrics['elapsed_s']:.1f} | {metrics['val_loss']:.4f} "
                   f"| {metrics['val_bpb']:.4f} |")


# fit's budget in the demo: this share of the default int6 pack's bytes, where the
# default policy cannot go and quantization damage becomes visible.
FIT_SHARE = 0.6


def _fit_step(run: Path, code_options: list[str], quick: bool) -> list[str]:
    """`fit` the vanilla run to FIT_SHARE of its int6 pack (code included) and print the
    roundtrip delta it reaches there; returns the failed step's name, if any."""
    budget = int(FIT_SHARE * (run / "model.akit").stat().st_size)
    code_bytes = sum(Path(option).stat().st_size for option in code_options if option != "--code")
    command = [*_artifactkit_prefix(), "fit", str(run / "ckpt.pt"), "--budget", str(budget + code_bytes),
               *code_options, "-o", str(run / "fit.akit"), "--calib", str(run / "data" / "train_*.bin"),
               "--calib-seqs", "8", "--val", str(run / "data" / "val_*.bin"), "--tokenizer",
               str(run / "tokenizer.model")]
    if quick:  # a few candidates per matrix: the same steps, seconds instead of a minute
        command += ["--bits-choices", "6", "--clip-choices", "percentile", "--step-grid", "0.3,0.6"]
    click.echo(f"\nfit: the same checkpoint at {FIT_SHARE:.0%} of the int6 pack's bytes (+ code), calibrated on "
               "training shards; it prints the roundtrip val_bpb of what it wrote.")
    result = _run(command)
    return [] if result.returncode == 0 else ["fit"]


def _roundtrip_line(document: str) -> str:
    data = json.loads(document)
    return (f"val_bpb float {data['val_bpb_fp']:.4f}, dequantized {data['val_bpb_q']:.4f} "
            f"(delta {data['delta_bpb']:+.5f}) on {data['tokens']:,} tokens, {data['mode']}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Directory for both runs and every artifact.")
@click.option("--quick", is_flag=True, help="A few steps per run instead of a wall-clock budget (for tests).")
@click.option("--wall-s", default=90.0, show_default=True, type=float,
              help="Training seconds per run (both runs get the same).")
@click.option("--cpu-threads", default=1, show_default=True, type=int,
              help="CPU threads per training run (0 = torch's default). 1 keeps step times predictable: with 2 threads, any other job on a 2-core machine slows torch many times over.")
def demo_command(out: str, quick: bool, wall_s: float, cpu_threads: int) -> None:
    """Train a 2 x 384 model (vanilla and JEPA, equal wall time) on the embedded corpus, then
    pack (int6 attention and MLP matrices), size-report, roundtrip-evaluate and A/B-report
    the result with artifactkit."""
    started = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    iterations, budget = (6, 0.0) if quick else (100_000, wall_s)
    click.secho(f"artifactkit demo -> {out_dir} ({'quick' if quick else f'{budget:g}s per run'})", bold=True)
    click.echo("Each run prepares the embedded corpus (Python's own documentation: tokenizer + shards) "
               "into its directory, then trains the mid preset's shape with 2 layers, whose attention and MLP "
               "matrices artifactkit int6-quantizes.")
    vanilla = _train(out_dir, "vanilla", 0.0, iterations, budget, cpu_threads)
    jepa = _train(out_dir, "jepa", JEPA_WEIGHT, iterations, budget, cpu_threads)
    _summary({"vanilla (CE)": vanilla, f"JEPA ({JEPA_WEIGHT})": jepa}, "steps" if quick else "wall time")

    # the trainer's own files stand in for "the code the submission ships"
    code = sorted(os.path.relpath(path) for path in Path(__file__).resolve().parent.glob("*.py"))
    code_options = [option for path in code for option in ("--code", path)]
    steps: list[tuple[list[str], list[str], Path | None]] = []
    for run in (vanilla, jepa):
        steps.append((["pack"], ["pack", str(run / "ckpt.pt"), "-o", str(run / "model.akit"), *code_options], None))
        steps.append((["roundtrip-eval"], ["roundtrip-eval", str(run / "ckpt.pt"), "--artifact", str(run / "model.akit"),
                                           "--val", str(run / "data" / "val_*.bin"),
                                           "--tokenizer", str(run / "tokenizer.model"), "--json"],
                      run / "roundtrip.json"))
    steps += [
        (["size-report"], ["size-report", str(vanilla / "ckpt.pt"), *code_options, "--count-loader",
                           "--plot", str(out_dir / "size.png"), "--markdown", str(out_dir / "size.md")], None),
        (["check"], ["check", str(vanilla / "model.akit"), *code_options], None),
        (["report", "ab"], ["report", "ab", str(vanilla / "log.jsonl"), str(jepa / "log.jsonl"),
                            "--label-a", "vanilla CE", "--label-b", f"JEPA {JEPA_WEIGHT}",
                            "--artifact-a", str(vanilla / "model.akit"), "--artifact-b", str(jepa / "model.akit"),
                            "--roundtrip-a", str(vanilla / "roundtrip.json"),
                            "--roundtrip-b", str(jepa / "roundtrip.json"), "-o", str(out_dir / "ab")], None),
    ]
    failed = []
    for probe, arguments, json_output in steps:
        name = " ".join(probe)
        result = _run([*_artifactkit_prefix(), *arguments], capture=json_output is not None)
        if json_output is not None:
            sys.stderr.write(result.stderr)
            if result.returncode == 0:
                json_output.write_text(result.stdout, encoding="utf-8")
                click.echo(f"wrote {json_output}: {_roundtrip_line(result.stdout)}")
        if result.returncode != 0:
            failed.append(name)
    if "pack" not in failed:
        failed += _fit_step(vanilla, code_options, quick)
    click.echo(f"\n{SCALE_NOTE}")
    click.secho(f"\ndemo finished in {time.perf_counter() - started:.0f}s; outputs under {out_dir}", bold=True)
    if failed:
        raise click.ClickException(f"artifactkit steps failed: {', '.join(failed)}; see their output above")


def main(argv: list[str] | None = None) -> None:
    demo_command.main(argv, prog_name="artifactkit-demo")


if __name__ == "__main__":
    main()
