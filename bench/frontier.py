"""The frontier benchmark (issue 11): at a given artifact size, how much val_bpb does
packing cost, for the public baseline, the seed, the leaders' record pipeline (with its
own codec and with ours), the record pipeline re-tuned for the checkpoint at hand, and
`artifactkit fit` at the record's size and around it. Writes reports/frontier.md,
reports/frontier.png and reports/frontier.json.

    python bench/frontier.py --seed-a RUN_A --seed-b RUN_B [--cache-dir runs/frontier-cache]
    # or the two seeds in two processes, then the report from their points files:
    python bench/frontier.py --seed-a RUN_A --seed-b RUN_B --only A   (and --only B)
    python bench/frontier.py --render-only
    python bench/frontier.py --smoke --work-dir /tmp/frontier-smoke   # tiny, seconds (the CI test)

A RUN directory holds `ckpt.pt`, `tokenizer.model`, `data/train_*.bin` and
`data/val_*.bin` (what `python -m train` writes for the embedded corpus). Every point is
a real file under WORK_DIR/artifacts (an .akit, or the record codec's blob) whose size is
the point's bytes; Δbpb = val_bpb(dequantized) − val_bpb(float), both on the same first
`--val-tokens` validation targets (standard windows at the training seq_len). The
record-codec points are scored on the weights decoded back from their blob.
Calibration (Hessians for the record recipe, fit's own calibration) reads TRAINING
shards only. Hessians and the float evaluation are cached under --cache-dir, keyed by
the checkpoint's sha256 and the settings, so reruns skip them.

Selection bias: settings are chosen on seed A and the targets reported on seed B. fit
runs with its defaults, with and without LQER candidates; which of the two the targets
use is decided by a fixed rule on seed A's points alone (`chosen_lqer_rank`), and both
are shown. The record pipeline's k grid runs on both checkpoints and its frontier is
taken from each checkpoint's own points, which favours the record (it is tuned on the
checkpoint it is scored on).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, installed or not
sys.path.append(str(ROOT / "bench"))  # for record_codec; last, so bench/train.py never shadows the train package

import record_codec  # noqa: E402
from bench_common import cpu_model  # noqa: E402

from artifactkit.checkpoint import LoadedCheckpoint, load_checkpoint  # noqa: E402
from artifactkit.errors import CheckFailed  # noqa: E402
from artifactkit.fit.pipeline import FitOptions, FitProblem, prepare_fit, solve_budget  # noqa: E402
from artifactkit.fit.record import (  # noqa: E402
    RecordRecipe,
    calibration_seq_len,
    record_hessians,
    record_quantize,
)
from artifactkit.format.akit import encode_artifact, write_artifact  # noqa: E402
from artifactkit.format.reader import read_artifact  # noqa: E402
from artifactkit.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from artifactkit.plan.policy import NAMED_POLICIES  # noqa: E402
from artifactkit.quantize.apply import quantize_state_dict  # noqa: E402
from artifactkit.quantize.calibration import tokens_from_shards  # noqa: E402
from artifactkit.roundtrip.evaluate import default_seq_len, load_val_tokens  # noqa: E402
from artifactkit.roundtrip.model_factory import build_model  # noqa: E402
from eval.bpb import build_byte_tables  # noqa: E402
from eval.evaluate import evaluate_bpb, standard_scored_targets  # noqa: E402
from eval.runtime import file_sha256, load_tokenizer  # noqa: E402

REPORT_DIR = ROOT / "reports"
# k multipliers per embedding width: dense around the record's own k (1.0), then out to the
# low-byte end, where the race is. On the mid checkpoints the int8 embedding's points form
# most of the frontier, so its grid reaches furthest.
DEFAULT_K_GRID = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 2.0)
DEFAULT_K_GRID_E8 = (0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.4, 3.0)
# fit's budgets as fractions of the record's own-codec bytes: the 0.90 / 0.95 / 1.00
# / 1.05, and lower ones to find where fit stops fitting.
FIT_FRACTIONS = (0.60, 0.70, 0.80, 0.90, 0.95, 1.00, 1.05)
MIN_VAL_TOKENS = 65_536  # the issue asks for at least 64k tokens
# The embedded corpus holds out only ~27k validation targets. To reach MIN_VAL_TOKENS the
# bench appends documents of the same kind the model never saw: docstrings of standard-library
# modules outside the corpus's own list (train.corpus.DOCSTRING_MODULES), minus any document
# whose text is also in the corpus. Fixed and sorted, so the tokens are reproducible (~80k on
# Python 3.11; modules missing from a Python install are skipped).
HELD_OUT_MODULES: tuple[str, ...] = (
    "_pyio", "_strptime", "asyncio.protocols", "asyncio.sslproto", "asyncio.transports",
    "asyncio.unix_events", "codeop", "colorsys", "compileall", "concurrent.futures.process",
    "concurrent.futures.thread", "copyreg", "ctypes", "dbm", "email._policybase", "email.feedparser",
    "email.headerregistry", "email.parser", "email.policy", "filecmp", "graphlib", "hashlib",
    "idlelib.editor", "importlib.abc", "importlib.metadata", "keyword", "lib2to3.pytree", "linecache",
    "logging.config", "lzma", "mailcap", "modulefinder", "multiprocessing.managers",
    "multiprocessing.shared_memory", "nntplib", "operator", "pkgutil", "profile", "pstats",
    "py_compile", "pyclbr", "quopri", "rlcompleter", "secrets", "shelve", "sndhdr", "stringprep",
    "symtable", "sysconfig", "tabnanny", "telnetlib", "tkinter", "tomllib._parser", "tracemalloc",
    "types", "unittest.loader", "unittest.suite", "urllib.robotparser", "webbrowser", "wsgiref.handlers",
    "wsgiref.validate", "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax.saxutils", "xmlrpc.client",
    "xmlrpc.server", "zipapp",
)
EVAL_CHUNKS = 16  # Δbpb's standard error comes from the spread over this many runs of windows
FIT_CALIB_SEQS = 64  # fit's calibration: its default number of windows, from the training shards
PIPELINES = {  # pipeline key -> (label in tables and plot, marker, colour)
    "baseline": ("public baseline: int8 + zlib", "s", "#7f7f7f"),
    "seed": ("seed: percentile int6/int8 + lzma", "D", "#8c564b"),
    "default": ("artifactkit pack (int6-mixed, ans)", "v", "#17becf"),
    "record": ("record pipeline, own codec", "*", "#d62728"),
    "record-ours": ("record pipeline, our .akit", "P", "#ff7f0e"),
    "record-brotli": ("record pipeline, as the 04-29 record ships (shuffle + brotli-11)", "X", "#e377c2"),
    "retuned-e7": ("record re-tuned: k × m, embedding int7", "o", "#1f77b4"),
    "retuned-e8": ("record re-tuned: k × m, embedding int8", "^", "#9467bd"),
    "fit": ("artifactkit fit", "h", "#2ca02c"),
}


@dataclass
class Settings:
    """What one benchmark run uses (written into the report)."""

    val_tokens: int = MIN_VAL_TOKENS
    calib_seqs: int = 64
    k_grid: tuple[float, ...] = DEFAULT_K_GRID  # with the int7 embedding (the record's width)
    k_grid_e8: tuple[float, ...] = DEFAULT_K_GRID_E8  # with an int8 embedding; () = none
    fit_fractions: tuple[float, ...] = FIT_FRACTIONS
    fit_calib_seqs: int = FIT_CALIB_SEQS
    small_threshold: int | None = None  # None: 65,536 everywhere (smoke lowers it)
    fit_bits: tuple[int, ...] | None = None  # None: fit's defaults
    fit_clips: tuple[str, ...] | None = None
    fit_search_clip: bool = True
    fit_codec: str = "ans"
    fit_steps: tuple[float, ...] | None = None  # None: fit's default SDClip step grid
    fit_lqer_ranks: tuple[int, ...] = (0, 4)  # fit run with each; the one used in the targets is chosen on seed A
    fit_choice: tuple[int, str] | None = None  # (rank, why), set when rendering
    frontier_fits: int = 12  # on the reported seed: fit at 0.90 x the bytes of up to this many frontier points
    grid_variant: str | None = None  # the re-tuned points' codec variant; None: the record point's
    threads: int = 1
    smoke: bool = False
    allow_short_val: bool = False  # score every validation target when there are fewer than val_tokens
    held_out_val: bool = True  # too few validation targets: append HELD_OUT_MODULES' docstrings


@dataclass
class Point:
    """One measured artifact."""

    checkpoint: str  # "A" | "B"
    pipeline: str  # a PIPELINES key
    setting: str
    codec: str
    bytes: int | None
    delta_bpb: float | None
    path: str | None
    seconds: float
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One checkpoint with everything the points need."""

    name: str
    role: str
    run_dir: Path
    checkpoint_path: Path
    checkpoint: LoadedCheckpoint
    config: dict[str, Any]
    seq_len: int
    val_tokens: np.ndarray
    tables: Any
    train_glob: str
    sha256: str
    float_bpb: float = float("nan")
    float_chunks: list[tuple[float, int]] = field(default_factory=list)
    float_seconds: float = 0.0
    hessians: dict[str, torch.Tensor] = field(default_factory=dict)
    hessian_seconds: float = 0.0
    cache_dir: Path | None = None  # this checkpoint's cache folder
    tokens_key: str = ""  # which validation tokens were scored

    def chunk_sums(self, state_dict: dict[str, torch.Tensor]) -> list[tuple[float, int]]:
        """(nll sum, bytes) of each of EVAL_CHUNKS consecutive runs of standard windows:
        together exactly the windows of one evaluation over all the tokens."""
        model = build_model(self.checkpoint.arch, self.config, state_dict, where=str(self.checkpoint_path))
        windows = standard_scored_targets(len(self.val_tokens), self.seq_len) // self.seq_len
        chunks = min(EVAL_CHUNKS, windows)
        sums = []
        for chunk in range(chunks):
            first, last = windows * chunk // chunks, windows * (chunk + 1) // chunks
            result = evaluate_bpb(model, self.val_tokens[first * self.seq_len : last * self.seq_len + 1],
                                  self.tables, seq_len=self.seq_len)
            sums.append((result.nll_sum, result.bytes))
        return sums

    def delta(self, state_dict: dict[str, torch.Tensor]) -> tuple[float, float]:
        """Δbpb against the float model on the same windows, and its paired standard error
        (ratio estimator over the chunks: how much another validation slice could move it)."""
        quantized = self.chunk_sums(state_dict)
        total_bytes = sum(size for _, size in self.float_chunks)
        differences = [(q - f) / math.log(2) for (q, _), (f, _) in zip(quantized, self.float_chunks, strict=True)]
        delta = sum(differences) / total_bytes
        count = len(differences)
        spread = sum((d - delta * size) ** 2 for d, (_, size) in zip(differences, self.float_chunks, strict=True))
        error = math.sqrt(count / max(count - 1, 1) * spread) / total_bytes
        return delta, error


@dataclass
class RunInfo:
    """What the report says about a checkpoint (saved with its points, so a report can be
    rendered from the points files of runs made in separate processes)."""

    name: str
    role: str
    checkpoint_path: str
    step: int | None
    num_params: int
    float_bpb: float
    val_targets: int  # targets scored (whole windows)
    seq_len: int
    sha256: str

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        return cls(run.name, run.role, str(run.checkpoint_path), run.checkpoint.step, run.checkpoint.num_params,
                   run.float_bpb, standard_scored_targets(len(run.val_tokens), run.seq_len), run.seq_len, run.sha256)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} cpu {time.process_time():.0f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup and caches


def held_out_tokens(sp) -> np.ndarray:
    """Validation text the embedded corpus does not contain (see HELD_OUT_MODULES), in the
    corpus's token layout (BOS before each document)."""
    from train.corpus import DOCSTRING_MODULES, embedded_documents, module_docstrings
    from train.data import encode_documents

    seen = {document.digest for document in embedded_documents()}
    with warnings.catch_warnings():  # finding lib2to3.pytree imports lib2to3, deprecated since 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        documents = [document for module in HELD_OUT_MODULES if module not in DOCSTRING_MODULES
                     for document in module_docstrings(module) if document.digest not in seen]
    return np.asarray(encode_documents(sp, documents))


def open_run(name: str, role: str, run_dir: Path, settings: Settings, cache_dir: Path) -> Run:
    checkpoint_path = run_dir / "ckpt.pt"
    checkpoint = load_checkpoint(checkpoint_path)
    config = dict(checkpoint.config or {})
    seq_len = default_seq_len(config, checkpoint.train_config)
    sp, _ = load_tokenizer(run_dir / "tokenizer.model")
    tokens = np.asarray(load_val_tokens(str(run_dir / "data" / "val_*.bin")))
    if len(tokens) - 1 < settings.val_tokens and settings.held_out_val:
        tokens = np.concatenate([tokens, held_out_tokens(sp)])
    if len(tokens) - 1 < settings.val_tokens and not (settings.smoke or settings.allow_short_val):
        raise SystemExit(f"{run_dir}: the validation shards hold {len(tokens) - 1:,} targets, fewer than "
                         f"--val-tokens {settings.val_tokens:,}; prepare more validation text, or pass "
                         "--allow-short-val to score all of them (the report says so)")
    run = Run(name, role, run_dir, checkpoint_path, checkpoint, config, seq_len,
              tokens[: settings.val_tokens + 1], build_byte_tables(sp, vocab_size=config.get("vocab_size")),
              str(run_dir / "data" / "train_*.bin"), file_sha256(checkpoint_path))
    key_dir = cache_dir / run.sha256[:16]
    key_dir.mkdir(parents=True, exist_ok=True)
    tokens_key = hashlib.sha256(run.val_tokens.astype("<u2").tobytes()).hexdigest()[:12]
    run.cache_dir, run.tokens_key = key_dir, tokens_key
    float_file = key_dir / f"float_{tokens_key}_{seq_len}_chunks{EVAL_CHUNKS}.json"
    if float_file.is_file():
        cached = json.loads(float_file.read_text())
        run.float_chunks, run.float_seconds = [tuple(chunk) for chunk in cached["chunks"]], cached["seconds"]
        cached_text = " (cached)"
    else:
        begin = time.perf_counter()
        run.float_chunks = run.chunk_sums(checkpoint.state_dict)
        run.float_seconds = time.perf_counter() - begin
        atomic_write_text(float_file, json.dumps({"chunks": run.float_chunks, "seconds": run.float_seconds}))
        cached_text = f" ({run.float_seconds:.0f} s)"
    run.float_bpb = (sum(nll for nll, _ in run.float_chunks) / math.log(2)
                     / sum(size for _, size in run.float_chunks))
    say(f"{name}: float val_bpb {run.float_bpb:.6f} on {len(run.val_tokens) - 1:,} targets{cached_text}")
    recipe = RecordRecipe(calibration_sequences=settings.calib_seqs)
    calib_len = calibration_seq_len(recipe, checkpoint, config)
    hessian_file = key_dir / f"hessians_{settings.calib_seqs}x{calib_len}_seed{recipe.seed}.pt"
    if hessian_file.is_file():
        run.hessians = torch.load(hessian_file, weights_only=True)
        say(f"{name}: {len(run.hessians)} Hessians (cached)")
    else:
        begin = time.perf_counter()
        tokens_calib = tokens_from_shards(run.train_glob, settings.calib_seqs, calib_len, recipe.seed)
        model = build_model(checkpoint.arch, config, checkpoint.state_dict, where=str(checkpoint_path))
        run.hessians = record_hessians(model, tokens_calib, "cpu")
        run.hessian_seconds = time.perf_counter() - begin
        buffer_path = hessian_file.with_suffix(".tmp")
        torch.save(run.hessians, buffer_path)
        os.replace(buffer_path, hessian_file)
        say(f"{name}: {len(run.hessians)} Hessians on {settings.calib_seqs} x {calib_len} training tokens "
            f"({run.hessian_seconds:.0f} s)")
    return run


# --------------------------------------------------------------------------- points


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def akit_point(run: Run, pipeline: str, setting: str, packed, out_dir: Path, seconds: float, notes: str = "",
               extra: dict | None = None) -> Point:
    """Write the artifact, read it back from disk, score its dequantized weights."""
    path = out_dir / f"{slug(pipeline + '_' + setting)}.akit"
    write_artifact(path, packed)
    delta, error = run.delta(read_artifact(path).state_dict())
    point = Point(run.name, pipeline, setting, packed.header["codec"], path.stat().st_size, delta, str(path),
                  seconds, notes, {**(extra or {}), "delta_se": error})
    say(f"{run.name}: {PIPELINES[pipeline][0]} [{setting}] {point.bytes:,} B  Δbpb {delta:+.5f}")
    return point


# Bump when frontier.py changes how a cached point is measured (the library's and the
# codec's sources are hashed into the key on their own).
POINT_CACHE_VERSION = 1
CACHED_SOURCES = ("artifactkit", "eval", "bench/record_codec.py")
# fit's own modules: fit points are never cached (prepared and solved every run), so an edit
# to them must not throw away the record pipeline's points (half an hour of lrzip).
UNCACHED_SOURCES = ("artifactkit/fit/candidates.py", "artifactkit/fit/knapsack.py", "artifactkit/fit/pipeline.py",
                    "artifactkit/fit/sensitivity.py", "artifactkit/commands/fit.py")


@functools.cache
def code_version() -> str:
    """sha256 of every source file a cached point depends on (any edit invalidates)."""
    digest = hashlib.sha256(str(POINT_CACHE_VERSION).encode())
    for root in CACHED_SOURCES:
        path = ROOT / root
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if str(source.relative_to(ROOT)) in UNCACHED_SOURCES:
                continue
            digest.update(str(source.relative_to(ROOT)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def cached_points(run: Run, key: dict[str, Any], compute) -> list[Point]:
    """`compute()`'s points, or the same points from an earlier run: keyed by the
    checkpoint, the scored tokens, `key` and the code version, and reused only while every
    artifact file is still there with the recorded size."""
    text = json.dumps({**key, "tokens": run.tokens_key, "seq_len": run.seq_len, "chunks": EVAL_CHUNKS,
                       "code": code_version()}, sort_keys=True, default=str)
    cache_file = run.cache_dir / "points" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if cache_file.is_file():
        points = [Point(**item) for item in json.loads(cache_file.read_text())]
        if all(p.path is None or (Path(p.path).is_file() and Path(p.path).stat().st_size == p.bytes)
               for p in points):
            for point in points:
                say(f"{run.name}: {PIPELINES[point.pipeline][0]} [{point.setting}] {point.codec} "
                    f"{fmt_bytes(point.bytes)} B  Δbpb {fmt_delta(point.delta_bpb)} (cached)")
            return points
    points = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_file, json.dumps([asdict(p) for p in points], default=str))
    return points


def policy_points(run: Run, settings: Settings, out_dir: Path) -> list[Point]:
    seed_policy = "seed" if "seed" in NAMED_POLICIES else "int6-mixed"
    specs = [("baseline", "int8", "zlib", ""),
             ("seed", seed_policy, "lzma", "" if seed_policy == "seed" else
              "no --policy seed yet: int6-mixed (the seed's percentile int6 / int8 rules) + lzma stands in"),
             ("default", "int6-mixed", "ans", "")]
    points = []
    meta = {"arch": run.checkpoint.arch, "config": run.checkpoint.config}
    for pipeline, policy_name, codec, notes in specs:
        policy = NAMED_POLICIES[policy_name]
        if settings.small_threshold is not None:
            policy = replace(policy, small_threshold=settings.small_threshold)

        def compute(policy=policy, pipeline=pipeline, policy_name=policy_name, codec=codec, notes=notes):
            begin = time.perf_counter()
            packed = encode_artifact(quantize_state_dict(run.checkpoint.state_dict, policy, meta=meta), codec)
            return [akit_point(run, pipeline, f"--policy {policy_name} --codec {codec}", packed, out_dir,
                               time.perf_counter() - begin, notes)]

        points += cached_points(run, {"pipeline": pipeline, "policy": policy.to_json(), "codec": codec}, compute)
    return points


def recipe_for(settings: Settings, **changes: Any) -> RecordRecipe:
    recipe = RecordRecipe(calibration_sequences=settings.calib_seqs)
    if settings.small_threshold is not None:
        recipe = replace(recipe, small_threshold=settings.small_threshold)
    return replace(recipe, **changes)


def record_codec_point(run: Run, pipeline: str, setting: str, model, variant: str, out_dir: Path,
                       quantize_seconds: float, same_weights_as: Point | None = None) -> Point:
    """Encode with the record codec, decode from the file, score the decoded weights
    (or, with `same_weights_as`, take that point's Δbpb: the decoded arrays were just
    checked bit for bit against the same quantized model, so the weights are identical)."""
    path = out_dir / f"{slug(pipeline + '_' + setting + '_' + variant)}.rcdc"
    result, decoded = record_codec.measure(model, variant, path)
    if result.skipped:
        say(f"{run.name}: {pipeline} [{setting}] {variant}: skipped ({result.skipped})")
        return Point(run.name, pipeline, setting, variant, None, None, None, 0.0, f"skipped: {result.skipped}")
    notes = ""
    if same_weights_as is not None and same_weights_as.delta_bpb is not None:
        delta, error = same_weights_as.delta_bpb, same_weights_as.extra.get("delta_se")
        notes = "same decoded weights as the own-codec point"
    else:
        delta, error = run.delta(record_codec.parts_state_dict(decoded))
    point = Point(run.name, pipeline, setting, variant, result.bytes, delta, str(path),
                  quantize_seconds + result.seconds, notes, {"codes_bytes": result.codes_bytes, "delta_se": error,
                                                             "lqer": list(model.meta.get("lqer", []))})
    say(f"{run.name}: {PIPELINES[pipeline][0]} [{setting}] {variant} {point.bytes:,} B  Δbpb {delta:+.5f}")
    return point


def quantize_recipe(run: Run, recipe: RecordRecipe):
    begin = time.perf_counter()
    model = record_quantize(run.checkpoint.state_dict, run.hessians, recipe,
                            meta={"arch": run.checkpoint.arch, "config": run.checkpoint.config})
    return model, time.perf_counter() - begin


def record_points(run: Run, settings: Settings, out_dir: Path, record_variant: str) -> list[Point]:
    """The record recipe as published: its own codec (both variants) and our .akit."""
    recipe = recipe_for(settings)
    return cached_points(run, {"pipeline": "record", "recipe": recipe.to_json(), "variant": record_variant},
                         lambda: _record_points(run, recipe, out_dir, record_variant))


def _record_points(run: Run, recipe: RecordRecipe, out_dir: Path, record_variant: str) -> list[Point]:
    model, seconds = quantize_recipe(run, recipe)
    setting = "k_mult=1.0, embed int7 (the record's constants)"
    points = [record_codec_point(run, "record", setting, model, record_variant, out_dir, seconds)]
    if record_variant != "brotli":
        points.append(record_codec_point(run, "record-brotli", setting, model, "brotli", out_dir, seconds,
                                         same_weights_as=points[0]))
    begin = time.perf_counter()
    packed = encode_artifact(model)
    points.append(akit_point(run, "record-ours", setting, packed, out_dir, seconds + time.perf_counter() - begin,
                             "", {"lqer": list(model.meta.get("lqer", []))}))
    return points


def retuned_points(run: Run, settings: Settings, out_dir: Path, record_variant: str,
                   record: Point) -> list[Point]:
    """The recipe with every k times m, embedding int7 and int8, own codec. The grid point
    that IS the record (m = 1, int7, same codec) reuses the record's measurement."""
    variant = settings.grid_variant or record_variant
    points = []
    for embed_bits, grid in ((7, settings.k_grid), (8, settings.k_grid_e8)):
        for multiple in grid:
            setting = f"k_mult={multiple:g}, embed int{embed_bits}"
            if (multiple, embed_bits, variant) == (1.0, 7, record.codec) and record.bytes is not None:
                point = replace(record, pipeline="retuned-e7", setting=setting, extra=dict(record.extra),
                                notes="the record's own point")
            else:
                recipe = recipe_for(settings, k_mult=multiple, embed_bits=embed_bits)

                def compute(recipe=recipe, embed_bits=embed_bits, setting=setting):
                    model, seconds = quantize_recipe(run, recipe)
                    return [record_codec_point(run, f"retuned-e{embed_bits}", setting, model, variant, out_dir,
                                               seconds)]

                (point,) = cached_points(run, {"pipeline": f"retuned-e{embed_bits}", "recipe": recipe.to_json(),
                                               "variant": variant}, compute)
            point.extra.update(k_mult=multiple, embed_bits=embed_bits)
            points.append(point)
    return points


def fit_options(run: Run, settings: Settings, lqer_rank: int) -> FitOptions:
    """fit's options: its defaults, calibrated on training shards; `lqer_rank` is the one
    setting chosen on seed A (`chosen_lqer_rank`)."""
    options = FitOptions(budget=1, calib=run.train_glob, calib_seqs=settings.fit_calib_seqs, seed=0,
                         codec=settings.fit_codec, search_clip=settings.fit_search_clip, lqer_rank=lqer_rank)
    changes: dict[str, Any] = {}
    if settings.small_threshold is not None:
        changes["small_threshold"] = settings.small_threshold
    if settings.fit_bits is not None:
        changes["bits_choices"] = settings.fit_bits
    if settings.fit_clips is not None:
        changes["clip_choices"] = settings.fit_clips
    if settings.fit_steps is not None:
        changes["step_grid"] = settings.fit_steps
    return replace(options, **changes)


def fit_label(lqer_rank: int) -> str:
    return f"LQER rank {lqer_rank} candidates" if lqer_rank else "no LQER candidates"


def solve_point(run: Run, settings: Settings, problem: FitProblem, options: FitOptions, budget: int, label: str,
                out_dir: Path, extra: dict[str, Any]) -> Point:
    """fit's plan for one budget (the prepared problem solved, verified by real packs),
    written, read back and scored."""
    extra = {"budget": budget, "lqer_rank": options.lqer_rank, **extra}
    setting = f"{label}, {fit_label(options.lqer_rank)}"
    begin = time.perf_counter()
    try:
        fitted = solve_budget(problem, replace(options, budget=budget))
    except CheckFailed as exc:
        say(f"{run.name}: fit [{setting}]: does not fit ({exc})")
        return Point(run.name, "fit", setting, settings.fit_codec, None, None, None, time.perf_counter() - begin,
                     f"does not fit: {exc}", extra)
    seconds = time.perf_counter() - begin
    kinds: dict[str, int] = {}
    for row in fitted.plan_rows():
        kind = f"int{row['bits']}" if row["bits"] else str(row["scheme"])
        kind += "+LQER" if row.get("lqer_rank") else ""
        kinds[kind] = kinds.get(kind, 0) + 1
    extra.update(widths=dict(sorted(kinds.items())), headroom=fitted.line.headroom, real_packs=fitted.real_packs)
    return akit_point(run, "fit", setting, fitted.packed, out_dir, seconds, "", extra)


def fit_budgets(run: Run, settings: Settings, points: list[Point]) -> list[tuple[int, str, dict[str, Any]]]:
    """(budget, label, extra) of every fit point: fractions of the record's bytes, the
    default pack's bytes, and (on the reported seed) 0.90 x each record-frontier point's
    bytes, which tests target 2 directly. Largest first."""
    record_bytes = next(p.bytes for p in points if p.pipeline == "record")
    default_bytes = next(p.bytes for p in points if p.pipeline == "default")
    budgets = [(int(record_bytes * fraction), f"budget {fraction:.2f} × record", {"fraction": fraction})
               for fraction in settings.fit_fractions]
    budgets.append((default_bytes, "budget = default int6 pack", {"at_default_pack": True}))
    if run.role == "reported" and settings.frontier_fits > 0:
        frontier = sorted(pareto([p for p in points if p.pipeline.startswith("retuned")]),
                          key=lambda p: abs(math.log(p.bytes / record_bytes)))[: settings.frontier_fits]
        for target in frontier:
            budget = int(target.bytes * 0.90)
            same = next((extra for size, _, extra in budgets if size == budget), None)
            if same is not None:
                same.setdefault("for_frontier", []).append(target.setting)
            else:
                budgets.append((budget, f"budget 0.90 × [{target.setting}]", {"for_frontier": [target.setting]}))
    return sorted(budgets, key=lambda item: -item[0])


def fit_points(run: Run, settings: Settings, out_dir: Path, points: list[Point]) -> list[Point]:
    """Per LQER setting: fit's problem prepared once (calibration, every candidate, damage
    scaled to nats), then solved and verified for every budget."""
    budgets = fit_budgets(run, settings, points)
    results = []
    for lqer_rank in settings.fit_lqer_ranks:
        options = fit_options(run, settings, lqer_rank)
        begin = time.perf_counter()
        problem = prepare_fit(run.checkpoint_path, options)
        prepare_seconds = time.perf_counter() - begin
        say(f"{run.name}: fit problem prepared ({fit_label(lqer_rank)}): {len(problem.groups)} matrices, "
            f"{sum(len(g.candidates) for g in problem.groups)} candidates, {prepare_seconds:.0f} s")
        failed = 0  # fit's smallest plan does not depend on the budget: at or below a failed budget, all fail
        for budget, label, extra in budgets:
            label = f"{label} ({budget:,} B)"
            extra = {**extra, "prepare_seconds": prepare_seconds}
            if budget <= failed:
                results.append(Point(run.name, "fit", f"{label}, {fit_label(lqer_rank)}", settings.fit_codec, None,
                                     None, None, 0.0, f"does not fit: below a budget that did not fit ({failed:,} B)",
                                     {"budget": budget, "lqer_rank": lqer_rank, **extra}))
                continue
            point = solve_point(run, settings, problem, options, budget, label, out_dir, extra)
            if point.bytes is None:
                failed = max(failed, budget)
            results.append(point)
        del problem
    return results


def measure_run(run: Run, settings: Settings, work_dir: Path, record_variant: str) -> list[Point]:
    out_dir = work_dir / "artifacts" / run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    points = policy_points(run, settings, out_dir)
    points += record_points(run, settings, out_dir, record_variant)
    record = next(p for p in points if p.pipeline == "record")
    points += retuned_points(run, settings, out_dir, record_variant, record)
    points += fit_points(run, settings, out_dir, points)
    return points


# --------------------------------------------------------------------------- analysis


def pareto(points: list[Point]) -> list[Point]:
    """The lower-left frontier: points no other point beats on both bytes and Δbpb."""
    measured = sorted((p for p in points if p.bytes is not None), key=lambda p: (p.bytes, p.delta_bpb))
    frontier, best = [], math.inf
    for point in measured:
        if point.delta_bpb < best:
            frontier.append(point)
            best = point.delta_bpb
    return frontier


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def chosen_lqer_rank(points: list[Point], ranks: tuple[int, ...]) -> tuple[int, str]:
    """The fit setting the targets use, chosen on seed A's points alone: the LQER rank
    whose fit points at the record-fraction budgets have the lowest mean Δbpb, over the
    budgets where every rank produced an artifact (ties: the first rank listed)."""
    by_rank = {rank: {p.extra["fraction"]: p.delta_bpb for p in points
                      if p.pipeline == "fit" and p.bytes is not None and "fraction" in p.extra
                      and p.extra.get("lqer_rank", 0) == rank} for rank in ranks}
    common = set.intersection(*(set(values) for values in by_rank.values())) if by_rank else set()
    if not common:
        return ranks[0], "no record-fraction budget where every setting fit; the first setting is used"
    means = {rank: sum(by_rank[rank][f] for f in common) / len(common) for rank in ranks}
    best = min(ranks, key=lambda rank: (means[rank], ranks.index(rank)))
    detail = ", ".join(f"{fit_label(rank)}: {means[rank]:+.6f}" for rank in ranks)
    return best, f"mean Δbpb over the {len(common)} record-fraction budgets on seed A: {detail}"


def targets(points: list[Point], lqer_rank: int = 0) -> dict[str, Any]:
    """The three ratios issue 11 asks for, from one checkpoint's points (fit points of the
    chosen LQER setting only)."""
    points = [p for p in points if p.pipeline != "fit" or p.extra.get("lqer_rank", 0) == lqer_rank]
    retuned = [p for p in points if p.pipeline.startswith("retuned") and p.bytes is not None]
    frontier = pareto(retuned)
    fits = [p for p in points if p.pipeline == "fit" and p.bytes is not None]
    equal_bytes = []
    for fit in sorted(fits, key=lambda p: p.bytes):
        budget = fit.extra["budget"]
        fitting = [p for p in retuned if p.bytes <= budget]
        best = min(fitting, key=lambda p: p.delta_bpb) if fitting else None
        equal_bytes.append({"fit": fit.setting, "fit_bytes": fit.bytes, "fit_delta": fit.delta_bpb,
                            "fit_se": fit.extra.get("delta_se"), "budget": budget,
                            "record": best.setting if best else None, "record_bytes": best.bytes if best else None,
                            "record_delta": best.delta_bpb if best else None,
                            "record_se": best.extra.get("delta_se") if best else None,
                            "ratio": ratio(fit.delta_bpb, best.delta_bpb) if best else None})
    all_fits = [p for p in points if p.pipeline == "fit"]
    equal_damage = []
    for point in frontier:
        direct = next((f for f in all_fits if point.setting in f.extra.get("for_frontier", [])), None)
        if direct is not None and direct.bytes is None:
            chosen, how, met = None, "direct: fit at 0.90 × its bytes does not fit", False
        elif direct is not None:  # fit at 0.90 x this point's bytes: is its damage no worse?
            chosen, how = direct, "direct: fit at 0.90 × its bytes"
            met = direct.delta_bpb <= point.delta_bpb
        else:  # the fewest-byte measured fit point that is at least as good
            reaching = [f for f in fits if f.delta_bpb <= point.delta_bpb]
            chosen = min(reaching, key=lambda f: f.bytes) if reaching else None
            how = "fewest-byte measured fit point at least as good"
            met = chosen is not None and chosen.bytes <= 0.90 * point.bytes
        equal_damage.append({"record": point.setting, "record_bytes": point.bytes, "record_delta": point.delta_bpb,
                             "record_se": point.extra.get("delta_se"), "how": how,
                             "fit": chosen.setting if chosen else None, "fit_bytes": chosen.bytes if chosen else None,
                             "fit_delta": chosen.delta_bpb if chosen else None,
                             "fit_se": chosen.extra.get("delta_se") if chosen else None,
                             "ratio": chosen.bytes / point.bytes if chosen else None, "met": met})
    default = next((p for p in points if p.pipeline == "default"), None)
    at_default = next((p for p in points if p.pipeline == "fit" and p.extra.get("at_default_pack")), None)
    default_pack = None
    if default is not None and at_default is not None:
        default_pack = {"pack_bytes": default.bytes, "pack_delta": default.delta_bpb,
                        "pack_se": default.extra.get("delta_se"), "fit_bytes": at_default.bytes,
                        "fit_delta": at_default.delta_bpb, "fit_se": at_default.extra.get("delta_se"),
                        "ratio": ratio(at_default.delta_bpb, default.delta_bpb) if at_default.bytes else None}
    return {"frontier": [p.setting for p in frontier], "equal_bytes": equal_bytes, "equal_damage": equal_damage,
            "default_pack": default_pack}


# --------------------------------------------------------------------------- report


def fmt_bytes(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def fmt_delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.5f}"


def fmt_pm(value: float | None, error: float | None) -> str:
    return fmt_delta(value) + ("" if value is None or error is None else f" ± {error:.5f}")


def fmt_ratio(value: float | None, target: float) -> str:
    if value is None:
        return "undefined"
    return f"**{value:.2f}** ({'met' if value <= target else 'not met'}, target ≤ {target:.2f})"


def machine_line() -> str:
    try:
        load = os.getloadavg()
        load_text = f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end"
    except OSError:
        load_text = "load average unknown"
    return (f"{cpu_model()} ({os.cpu_count()} cores, shared with other "
            f"engineers' jobs; {load_text}), Python {platform.python_version()}, torch {torch.__version__}")


def git_describe() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lrzip_version() -> str:
    missing = record_codec.lrzip_missing()
    if missing:
        return missing
    result = subprocess.run(["lrzip", "-V"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def result_summary(analysis: dict[str, Any], name: str) -> list[str]:
    """The three targets on the reported seed, one line each (the tables below have the rows)."""
    if not analysis:
        return []
    one = [row["ratio"] for row in analysis["equal_bytes"] if row["ratio"] is not None]
    two = analysis["equal_damage"]
    three = (analysis["default_pack"] or {}).get("ratio")
    lines = [f"## Result on seed {name} (reported)", ""]
    if one:
        lines.append(f"1. Equal bytes, fit Δbpb ≤ 0.5 × the best re-tuned record point that fits: met at "
                     f"{sum(r <= 0.5 for r in one)} of {len(one)} budgets with a record point to compare "
                     f"(ratios {min(one):.2f} to {max(one):.2f}).")
    if two:
        lines.append(f"2. At each record-frontier point's Δbpb, fit's bytes ≤ 0.90 ×: met for {sum(r['met'] for r in two)} "
                     f"of {len(two)} frontier points"
                     + "".join(f"; not met at {r['record']} (record Δbpb {fmt_pm(r['record_delta'], r['record_se'])}, "
                               f"fit {fmt_pm(r['fit_delta'], r['fit_se'])})" for r in two if not r["met"]) + ".")
    if three is not None:
        lines.append(f"3. At the default int6 pack's bytes, fit Δbpb ≤ 0.5 × the pack's: ratio {three:.2f} "
                     f"({'met' if three <= 0.5 else 'not met'}).")
    return lines + [""]


def render_report(runs: list[RunInfo], points: list[Point], analysis: dict[str, dict], settings: Settings,
                  command: str, seconds: float, record_variant: str, plot_name: str) -> str:
    reported = next((r for r in runs if r.role == "reported"), runs[-1])
    lines = [
        "# Frontier: bytes vs quantization damage against the leaders' pipeline",
        "",
        f"Generated by {command} ({seconds / 60:.0f} min of measuring), commit {git_describe()}.",
        f"Machine: {machine_line()}; torch threads {settings.threads}.",
        "",
        "What each point is: a real artifact file (its size is the bytes column) and Δbpb = val_bpb of the "
        "weights read back from that file − val_bpb of the float checkpoint, on the same validation targets "
        f"(the first {settings.val_tokens:,} or all there are, standard windows at the training seq_len; "
        "counts below). Calibration reads training shards only. When a run's validation split is shorter than "
        "that (the embedded corpus holds out ~27k targets), the bench appends docstrings of standard-library "
        "modules the corpus does not use (`HELD_OUT_MODULES`, minus any text the corpus contains): the same kind "
        "of text, never seen in training.",
        "",
        "## Checkpoints",
        "",
        "| seed | role | checkpoint | step | params | float val_bpb | validation targets | eval seq_len | sha256 |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        short = (f" (**fewer than the {settings.val_tokens:,} asked**: the whole validation split)"
                 if run.val_targets < settings.val_tokens and not settings.smoke else "")
        lines.append(f"| {run.name} | {run.role} | `{run.checkpoint_path}` | {run.step} | "
                     f"{run.num_params:,} | {run.float_bpb:.5f} | {run.val_targets:,}{short} | "
                     f"{run.seq_len} | `{run.sha256[:12]}` |")
    lines += [
        "",
        f"Seed A chose the settings, seed {reported.name} is reported. fit runs with its defaults (calibration "
        f"{settings.fit_calib_seqs} training windows) in {len(settings.fit_lqer_ranks)} settings, "
        + " and ".join(fit_label(rank) for rank in settings.fit_lqer_ranks)
        + f"; the targets use the one chosen on seed A: **{fit_label(settings.fit_choice[0])}** "
        f"({settings.fit_choice[1]}). Both appear in the tables and the plot. The record pipeline's k grid runs on "
        "both checkpoints and its frontier is taken from each checkpoint's own points, which favours the record "
        "(it is tuned on the checkpoint it is scored on).",
        "",
        *result_summary(analysis.get(reported.name, {}), reported.name),
        "## Pipelines",
        "",
        "- **public baseline**: `artifactkit pack --policy int8 --codec zlib` (per-row int8, the baseline's clip).",
        "- **seed**: `--policy seed` when it exists, else `--policy int6-mixed --codec lzma` (the seed's percentile "
        "int6 / int8 rules, lzma), marked in the notes.",
        "- **artifactkit pack**: the default pack (`int6-mixed`, codec `ans`).",
        "- **record pipeline** (`artifactkit pack --recipe record`, `artifactkit/fit/record.py`): GPTQ act-order, "
        "block 128, damp 1 %, SDClip k·std(row)/R with k 13 attention, 12 MLP, 12.85 other, 15 embedding (the "
        "04-29 record's logged constants; a sibling record and the issue quote 11.5 MLP / 14 embedding), int6 "
        "matrices, int7 tied embedding, fp16 tensors ≤ 65,536 elements, LQER rank 4 on the 3 matrices with the "
        "largest GPTQ error (A int2, B int4 in groups of 64); Hessians from "
        f"{settings.calib_seqs} training windows. Reproduction checked in `tests/artifactkit/test_record_recipe.py`: "
        "row scales equal fp16(k·std/R) with the unbiased std, bit for bit (also on a row where converting k "
        "alone lands one fp16 step off), and GPTQ codes equal an independent float32 re-implementation of the "
        "record's `gptq_quantize_weight` (dead columns included); LQER lands on the top-k matrices only.",
        f"- **own codec** (`bench/record_codec.py`, variant `{record_variant}`): "
        + ("codes rows reordered by greedy nearest neighbour (order stored), transposed, `lrzip -z -L 9` "
           f"({lrzip_version()}); the rest byte-shuffled + brotli-11. "
           if record_variant == "lrzip" else
           f"lrzip is unavailable ({record_codec.lrzip_missing()}), so the record's own shipped codec stands in: "
           "everything byte-shuffled + brotli-11. ")
        + "Every blob is decoded back and compared bit for bit; Δbpb is scored on the decoded weights.",
        "- **as the 04-29 record ships**: its `serialize` actually writes `torch.save` of the quantized tensors, "
        "byte-shuffled + brotli-11 (no row sort, no lrzip); measured for reference.",
        "- **our .akit**: the same quantized model (LQER factors included, format version 2) through "
        "`encode_artifact` (codec `ans`), read back with the checked reader.",
        "- **re-tuned record**: the recipe with every k multiplied by m ∈ {"
        + ", ".join(f"{m:g}" for m in settings.k_grid) + "} with the int7 embedding"
        + (" and m ∈ {" + ", ".join(f"{m:g}" for m in settings.k_grid_e8) + "} with an int8 embedding"
           if settings.k_grid_e8 else "")
        + f", own codec (variant `{settings.grid_variant or record_variant}`); its lower-left (Pareto) frontier is "
        "the record frontier.",
        f"- **artifactkit fit** (`prepare_fit` once per setting, then `solve_budget` per budget, which is "
        f"`fit_checkpoint`'s work; codec `{settings.fit_codec}`, calibration on training shards): budget = the "
        "record pipeline's own-codec bytes × " + ", ".join(f"{f:.2f}" for f in settings.fit_fractions)
        + ", = the default pack's bytes, and (on the reported seed) 0.90 × the bytes of each record-frontier point.",
        "",
        f"![bytes vs Δbpb]({plot_name})",
        "",
    ]
    for run in runs:
        lines += [f"## Seed {run.name} ({run.role}): all points", "",
                  "| pipeline | setting | codec | bytes | bytes / record | Δbpb ± s.e. | time | notes |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        run_points = [p for p in points if p.checkpoint == run.name]
        record = next((p for p in run_points if p.pipeline == "record" and p.bytes), None)
        frontier = set(analysis[run.name]["frontier"])
        for point in run_points:
            relative = f"{point.bytes / record.bytes:.3f}" if record and point.bytes else "—"
            notes = point.notes
            if point.pipeline.startswith("retuned") and point.setting in frontier:
                notes = ("**on the record frontier** " + notes).strip()
            if point.extra.get("widths"):
                notes = (notes + " widths " + ", ".join(f"{k}: {v}" for k, v in point.extra["widths"].items())).strip()
            error = point.extra.get("delta_se")
            lines.append(f"| {PIPELINES[point.pipeline][0]} | {point.setting} | {point.codec} | "
                         f"{fmt_bytes(point.bytes)} | {relative} | {fmt_pm(point.delta_bpb, error)} | "
                         f"{point.seconds:.0f} s | {notes} |")
        lines.append("")
    # The reported seed first: its ratios are the answer; seed A's are there to compare.
    for run in sorted(runs, key=lambda r: r.role != "reported"):
        result = analysis[run.name]
        lines += [f"## Targets on seed {run.name} ({run.role})", "",
                  "**1. At equal bytes, fit's Δbpb ≤ 0.5 × the best re-tuned record point that fits those bytes.**",
                  "",
                  "| fit | fit bytes | fit Δbpb | best re-tuned record ≤ fit's budget | its bytes | its Δbpb | ratio |",
                  "|---|---:|---:|---|---:|---:|---|"]
        for row in result["equal_bytes"]:
            lines.append(f"| {row['fit']} | {fmt_bytes(row['fit_bytes'])} | {fmt_pm(row['fit_delta'], row['fit_se'])} | "
                         f"{row['record'] or 'none fits'} | {fmt_bytes(row['record_bytes'])} | "
                         f"{fmt_pm(row['record_delta'], row['record_se'])} | {fmt_ratio(row['ratio'], 0.5)} |")
        lines += ["", "**2. At each record-frontier point's Δbpb, fit's bytes ≤ 0.90 × that point's bytes.** "
                  "Direct rows: fit ran with a budget of 0.90 × the point's bytes, and the target is met when its "
                  "Δbpb is no worse than the point's. Other rows: the fewest-byte measured fit point that is at "
                  "least as good (an upper bound on what fit needs).", "",
                  "| record frontier point | its bytes | its Δbpb | how | fit point | fit bytes | fit Δbpb | "
                  "bytes ratio | target |", "|---|---:|---:|---|---|---:|---:|---:|---|"]
        for row in result["equal_damage"]:
            verdict = "met" if row["met"] else "not met"
            bytes_ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3f}"
            lines.append(f"| {row['record']} | {fmt_bytes(row['record_bytes'])} | "
                         f"{fmt_pm(row['record_delta'], row['record_se'])} | {row['how']} | "
                         f"{row['fit'] or 'none is that good'} | {fmt_bytes(row['fit_bytes'])} | "
                         f"{fmt_pm(row['fit_delta'], row['fit_se'])} | "
                         f"{bytes_ratio} | **{verdict}** |")
        row = result["default_pack"]
        lines += ["", "**3. At the default int6 pack's bytes, fit's Δbpb ≤ 0.5 × the pack's.**", ""]
        if row:
            lines.append(f"default pack {fmt_bytes(row['pack_bytes'])} B, Δbpb {fmt_pm(row['pack_delta'], row['pack_se'])}; "
                         f"fit {fmt_bytes(row['fit_bytes'])} B, Δbpb {fmt_pm(row['fit_delta'], row['fit_se'])} → ratio "
                         f"{fmt_ratio(row['ratio'], 0.5)}")
        lines.append("")
    lines += [
        "## Reading the numbers",
        "",
        f"- Δbpb is paired (same tokens, same windows). ± is its standard error over {EVAL_CHUNKS} consecutive runs "
        "of windows (a ratio estimator): how far another validation slice of this size could move it. It does not "
        "cover the calibration draw. Two points closer than about twice their errors are not distinguishable, and "
        "a ratio whose denominator is within its error of zero is not meaningful; a zero or negative denominator "
        "is shown as undefined.",
        "- Bytes are the whole artifact file; code bytes (the loader / decoder a submission ships) are not "
        "included in any row.",
        "",
    ]
    return "\n".join(lines)


def _plot_series(points: list[Point], chosen_rank: int, ranks: tuple[int, ...]) -> list[tuple]:
    """(pipeline, label, marker, colour, points) per line of the plot; fit is split into
    the setting chosen on seed A and the other(s)."""
    series = []
    for pipeline, (label, marker, colour) in PIPELINES.items():
        members = sorted((p for p in points if p.pipeline == pipeline), key=lambda p: p.bytes)
        if pipeline != "fit":
            series.append((pipeline, label, marker, colour, members))
            continue
        series.append((pipeline, f"{label}: {fit_label(chosen_rank)} (chosen on A)", marker, colour,
                       [p for p in members if p.extra.get("lqer_rank", 0) == chosen_rank]))
        others = [rank for rank in ranks if rank != chosen_rank]
        if others:
            series.append((pipeline, f"{label}: {', '.join(fit_label(rank) for rank in others)} (not chosen)", "H",
                           "#98df8a", [p for p in members if p.extra.get("lqer_rank", 0) != chosen_rank]))
    return [item for item in series if item[4]]


def _fit_tag(point: Point) -> str:
    if "fraction" in point.extra:
        return f"{point.extra['fraction']:.2f}×rec"
    if point.extra.get("at_default_pack"):
        return "@pack"
    return "0.9×frontier"


def render_plot(runs: list[RunInfo], points: list[Point], analysis: dict[str, dict], path: Path,
                chosen_rank: int = 0, ranks: tuple[int, ...] = (0,)) -> None:
    """Bytes (x) vs Δbpb (y) per seed: every pipeline (top), and zoomed on the record
    pipeline's range, where fit and the re-tuned record compete (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(runs), figsize=(8 * len(runs), 12), squeeze=False)
    for column, run in enumerate(runs):
        run_points = [p for p in points if p.checkpoint == run.name and p.bytes is not None]
        series = _plot_series(run_points, chosen_rank, ranks)
        frontier = sorted((p for p in run_points if p.pipeline.startswith("retuned")
                           and p.setting in set(analysis[run.name]["frontier"])), key=lambda p: p.bytes)
        zoom_points = [p for p in run_points if p.pipeline.startswith(("record", "retuned"))]
        for row, axis in enumerate(axes[:, column]):
            for pipeline, label, marker, colour, members in series:
                xs = [p.bytes / 1e6 for p in members]
                ys = [p.delta_bpb for p in members]
                connected = pipeline.startswith("retuned") or pipeline == "fit"
                axis.plot(xs, ys, marker=marker, linestyle="-" if connected else "none", color=colour, label=label,
                          markersize=8, linewidth=1.0, alpha=0.9)
                if row == 1:
                    for point, x, y in zip(members, xs, ys, strict=True):
                        tag = (f"{point.extra['k_mult']:g}" if pipeline.startswith("retuned")
                               else _fit_tag(point) if pipeline == "fit" else "")
                        if tag:
                            axis.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                          color=colour)
            if frontier:
                axis.step([p.bytes / 1e6 for p in frontier], [p.delta_bpb for p in frontier], where="post",
                          color="#d62728", linestyle="--", linewidth=1.5, alpha=0.5, label="record frontier (Pareto)")
            axis.axhline(0.0, color="black", linewidth=0.6)
            axis.set_xlabel("artifact bytes (MB, decimal)")
            axis.set_ylabel("Δbpb (dequantized − float)")
            axis.grid(alpha=0.3)
            if row == 0:
                axis.set_title(f"seed {run.name} ({run.role}): every pipeline; float val_bpb {run.float_bpb:.4f}")
            elif zoom_points:
                low = min(p.bytes for p in zoom_points) / 1e6
                high = max(p.bytes for p in zoom_points) / 1e6
                margin = 0.08 * (high - low or high)
                axis.set_xlim(low - margin, high + margin)
                visible = [p.delta_bpb for p in run_points if low - margin <= p.bytes / 1e6 <= high + margin]
                axis.set_ylim(min(0.0, min(visible)) - 0.001, max(visible) * 1.1 + 0.001)
                axis.set_title(f"seed {run.name}: zoom on the record pipeline's range (labels: k multiplier; "
                               "fit budget)")
    # One legend for all panels, below them, so no panel's points hide behind it.
    legend: dict[str, Any] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=2, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.04 + 0.018 * math.ceil(len(legend) / 2), 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- smoke


def smoke_runs(work_dir: Path, text: Path | None, tokenizer: Path | None) -> tuple[Path, Path]:
    """Two micro checkpoints (seeds A and B) trained in seconds, on `text` (paragraphs as
    documents) or else the embedded corpus; with `tokenizer`, no tokenizer is trained."""
    from train.data import prepare_embedded_corpus, prepare_text_files
    from train.loop import run_training
    from train.testing import micro_config

    if text is not None:
        prepared = prepare_text_files([text], work_dir / "corpus", tokenizer=tokenizer, unit="paragraph")
    else:
        prepared = prepare_embedded_corpus(work_dir / "corpus", tokenizer=tokenizer)
    runs = []
    for name, seed in (("A", 1), ("B", 2)):
        run_dir = work_dir / f"seed{name}"
        if not (run_dir / "ckpt.pt").is_file():
            run_training(micro_config(run_dir, prepared, iterations=3, seed=seed, jepa_weight=0.0),
                         console=lambda text: None)
        (run_dir / "data").mkdir(exist_ok=True)
        for kind in ("train", "val"):
            for shard in Path(prepared.train_glob if kind == "train" else prepared.val_glob).parent.glob(f"{kind}_*.bin"):
                link = run_dir / "data" / shard.name
                if not link.exists():
                    link.symlink_to(shard)
        if not (run_dir / "tokenizer.model").exists():
            (run_dir / "tokenizer.model").symlink_to(prepared.tokenizer)
        runs.append(run_dir)
    return runs[0], runs[1]


SMOKE_SETTINGS = Settings(val_tokens=2048, calib_seqs=8, k_grid=(0.8, 1.2), k_grid_e8=(), fit_fractions=(1.0,),
                          frontier_fits=1, fit_calib_seqs=8, small_threshold=1024, fit_bits=(2, 5, 8),
                          fit_clips=("percentile",), fit_steps=(0.3, 0.6), fit_search_clip=False, fit_codec="zlib",
                          grid_variant="brotli", smoke=True)


# --------------------------------------------------------------------------- main


def parse_floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-a", type=Path, help="run directory of the checkpoint that chooses settings")
    parser.add_argument("--seed-b", type=Path, help="run directory of the checkpoint that is reported")
    parser.add_argument("--smoke", action="store_true", help="tiny models trained here in seconds, few points "
                        "(for the CI test; the numbers mean nothing)")
    parser.add_argument("--smoke-text", type=Path, default=None,
                        help="with --smoke: train on this UTF-8 text (paragraphs as documents) instead of the "
                             "embedded corpus (faster to prepare)")
    parser.add_argument("--smoke-tokenizer", type=Path, default=None,
                        help="with --smoke: tokenize with this SentencePiece model instead of training one")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "frontier",
                        help="where the artifacts (one file per point) go")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Hessians and float evaluations (default: WORK_DIR/cache)")
    parser.add_argument("--report-dir", type=Path, default=REPORT_DIR, help="frontier.md / .png / .json go here")
    parser.add_argument("--val-tokens", type=int, default=MIN_VAL_TOKENS)
    parser.add_argument("--allow-short-val", action="store_true",
                        help="score every validation target when the split holds fewer than --val-tokens")
    parser.add_argument("--no-held-out-val", dest="held_out_val", action="store_false",
                        help="do not append held-out standard-library docstrings when the validation split holds "
                             "fewer than --val-tokens targets")
    parser.add_argument("--calib-seqs", type=int, default=64, help="training windows for the record's Hessians")
    parser.add_argument("--k-grid", type=parse_floats, default=DEFAULT_K_GRID,
                        help="k multipliers with the int7 embedding, comma list")
    parser.add_argument("--k-grid-e8", type=parse_floats, default=DEFAULT_K_GRID_E8,
                        help="k multipliers with an int8 embedding, comma list ('' for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared 2-core box)")
    parser.add_argument("--only", choices=("A", "B"),
                        help="measure only this seed and write WORK_DIR/points_SEED.json (run A and B in two "
                             "processes, then --render-only)")
    parser.add_argument("--render-only", action="store_true",
                        help="no measuring: render the report from WORK_DIR/points_A.json (and _B)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work_dir = args.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        settings = replace(SMOKE_SETTINGS, threads=args.threads)
        seed_a, seed_b = smoke_runs(work_dir, args.smoke_text, args.smoke_tokenizer)
    else:
        if args.seed_a is None and args.seed_b is None and not args.render_only:
            parser.error("--seed-a / --seed-b is required (or --smoke, or --render-only)")
        settings = Settings(val_tokens=args.val_tokens, calib_seqs=args.calib_seqs, k_grid=tuple(args.k_grid),
                            k_grid_e8=tuple(args.k_grid_e8), threads=args.threads,
                            allow_short_val=args.allow_short_val, held_out_val=args.held_out_val)
        seed_a, seed_b = args.seed_a, args.seed_b
    command = "python bench/frontier.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if not args.render_only:
        cache_dir = args.cache_dir or work_dir / "cache"
        record_variant = "lrzip" if record_codec.lrzip_missing() is None else "brotli"
        seeds = [("A", "chose settings", seed_a), ("B", "reported", seed_b)]
        for name, role, run_dir in seeds:
            if args.only and args.only != name:
                continue
            if run_dir is None:
                points_file(work_dir, name).unlink(missing_ok=True)  # never render a stale seed
                continue
            begin = time.perf_counter()
            run = open_run(name, role, run_dir, settings, cache_dir)
            points = measure_run(run, settings, work_dir, record_variant)
            document = {"command": command, "seconds": time.perf_counter() - begin, "settings": asdict(settings),
                        "record_variant": record_variant, "run": asdict(RunInfo.of(run)),
                        "points": [asdict(point) for point in points]}
            atomic_write_text(points_file(work_dir, name), json.dumps(document, indent=1, default=str))
        if args.only:
            say(f"wrote {points_file(work_dir, args.only)}; render with --render-only --work-dir {work_dir}")
            return 0
    render(work_dir, args.report_dir, command if not args.render_only else None)
    return 0


def points_file(work_dir: Path, name: str) -> Path:
    return work_dir / f"points_{name}.json"


def render(work_dir: Path, report_dir: Path, command: str | None) -> None:
    """The report, plot and JSON from the points files in `work_dir` (seed A, and B if there)."""
    documents = [json.loads(points_file(work_dir, name).read_text()) for name in ("A", "B")
                 if points_file(work_dir, name).is_file()]
    if not documents:
        raise SystemExit(f"{work_dir}: no points_A.json / points_B.json; run the measurements first")
    runs = [RunInfo(**document["run"]) for document in documents]
    points = [Point(**point) for document in documents for point in document["points"]]
    raw = documents[0]["settings"]
    settings = Settings(**{key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()})
    record_variant = documents[0]["record_variant"]
    commands = sorted({document["command"] for document in documents})
    described = " and ".join(f"`{text}`" for text in commands)
    if command is not None and command not in commands:
        described += f", rendered by `{command}`"
    seconds = sum(document["seconds"] for document in documents)
    chooser = next((run for run in runs if run.name == "A"), runs[0])
    rank, reason = chosen_lqer_rank([p for p in points if p.checkpoint == chooser.name], settings.fit_lqer_ranks)
    settings.fit_choice = (rank, reason)
    analysis = {run.name: targets([p for p in points if p.checkpoint == run.name], rank) for run in runs}
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_path = report_dir / "frontier.png"
    render_plot(runs, points, analysis, plot_path, rank, settings.fit_lqer_ranks)
    report = render_report(runs, points, analysis, settings, described, seconds, record_variant, plot_path.name)
    atomic_write_text(report_dir / "frontier.md", report)
    summary = {"commands": commands, "seconds": seconds, "settings": raw, "record_variant": record_variant,
               "checkpoints": [asdict(run) for run in runs], "points": [asdict(p) for p in points],
               "targets": analysis}
    atomic_write_text(report_dir / "frontier.json", json.dumps(summary, indent=1, default=str))
    say(f"wrote {report_dir / 'frontier.md'}, frontier.png, frontier.json")


if __name__ == "__main__":
    sys.exit(main())
