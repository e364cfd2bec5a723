"""The training loop: data resolution, torchrun ranks (their rank variables only),
gradient accumulation, per-rank clipping and the gradient all-reduce, schedules, JEPA
target updates, weight EMA / SWA, periodic validation through `eval.evaluate`, the
JSON-lines log, resumable state and the final checkpoint. One step is the seed's step,
in the seed's order.

`run_training(config)` is the whole run; `python -m train` only parses options.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from eval.atomic import atomic_write_text
from eval.bpb import build_byte_tables
from eval.evaluate import evaluate_bpb
from eval.shards import load_tokens, resolve_shards
from train.checkpoint import load_training_state, save_checkpoint, save_training_state
from train.config import TrainConfig
from train.data import PreparedData, TokenStream, file_sha256, load_tokenizer, prepare_embedded_corpus
from train.jepa import JepaObjective, ema_update
from train.model import GPT
from train.optim import build_optimizers, lr_multiplier, muon_momentum, warmdown_factor
from train.precision import apply_seed_master_dtypes

RUN_FORMAT = "artifactkit-run/1"


class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class Distributed:
    """torchrun's rank variables (the only environment the trainer reads)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> Distributed:
        return cls(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_from_main(self, tensors: list[torch.Tensor]) -> None:
        """Every rank starts from rank 0's weights (the seed relies on equal seeds alone)."""
        if self.enabled:
            for tensor in tensors:
                torch.distributed.broadcast(tensor.data, src=0)

    def average_gradients(self, parameters: list[torch.Tensor], bf16: set[int]) -> None:
        """grad <- mean over ranks. Parameters whose id is in `bf16` are averaged in bf16,
        as the seed reduce-scatters its banks' gradients."""
        if not self.enabled:
            return
        for parameter in parameters:
            if parameter.grad is None:
                continue
            grad = parameter.grad.to(torch.bfloat16) if id(parameter) in bf16 else parameter.grad
            torch.distributed.all_reduce(grad)  # SUM, then divide: gloo has no AVG
            grad.div_(self.world_size)
            if grad is not parameter.grad:
                parameter.grad.copy_(grad)


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    checkpoint: Path
    step: int
    metrics: dict


class TrainingObjective(nn.Module):
    """Context encoder + (optionally) the JEPA head: one module for DDP to wrap.
    Returns the loss components; their weighting happens in the loop."""

    def __init__(self, model: GPT, jepa: JepaObjective | None) -> None:
        super().__init__()
        self.model = model
        self.jepa = jepa

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.model.hidden_states(input_ids)
        parts = {"loss": self.model.cross_entropy(hidden, targets)}
        if self.jepa is not None:
            parts.update(self.jepa(self.model, input_ids, hidden))
        return parts


def clip_and_average_gradients(parameters: list[torch.Tensor], config: TrainConfig, dist: Distributed,
                               bf16: set[int] = frozenset()) -> None:
    """The seed clips each rank's own gradient and then averages over ranks;
    `grad_clip_global` averages first and clips the mean."""
    if config.grad_clip > 0 and not config.grad_clip_global:
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    dist.average_gradients(parameters, bf16)
    if config.grad_clip > 0 and config.grad_clip_global:
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)


def resolve_device(name: str, dist: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available; use --device cpu")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    if name != "cpu":
        raise TrainingError(f"--device {name}: unknown device; use cpu, cuda or auto")
    return torch.device("cpu")


def _shard_glob(directory: Path, split: str) -> str:
    for pattern in (f"{split}_*.bin", f"fineweb_{split}_*.bin"):
        if any(directory.glob(pattern)):
            return str(directory / pattern)
    raise TrainingError(f"{directory}: no {split}_*.bin or fineweb_{split}_*.bin shards; "
                        "prepare them with `python -m train prepare-data` or point --data at FineWeb sp1024 shards")


def resolve_data(config: TrainConfig, out_dir: Path, dist: Distributed,
                 say: Callable[[str], None] = lambda text: None) -> dict:
    """Where the tokenizer and shards are; prepares the embedded corpus into OUT when
    no data was given. Returns run.json's data entry."""
    if config.data is None and config.train_glob is None:
        previous = _read_json(out_dir / "run.json")
        reusable = (config.resume and previous.get("data_source") == "embedded"
                    and Path(previous.get("tokenizer", "")).is_file())
        if reusable:
            return {key: previous[key] for key in ("data_source", "tokenizer", "train_glob", "val_glob",
                                                  "corpus_fingerprint")}
        if dist.is_main:
            say(f"preparing the embedded corpus (Python's documentation) into {out_dir}: tokenizer + shards")
            prepared: PreparedData = prepare_embedded_corpus(out_dir)
            say(f"  {prepared.train_tokens:,} train / {prepared.val_tokens:,} validation tokens")
        dist.barrier()
        if not dist.is_main:
            prepared = PreparedData(out_dir / "tokenizer.model", str(out_dir / "data" / "train_*.bin"),
                                    str(out_dir / "data" / "val_*.bin"), 0, 0, "")
        return {"data_source": "embedded", "tokenizer": str(prepared.tokenizer.resolve()),
                "train_glob": str(Path(prepared.train_glob).resolve()),
                "val_glob": str(Path(prepared.val_glob).resolve()), "corpus_fingerprint": prepared.fingerprint}
    if config.tokenizer is None:
        raise TrainingError("--data/--train-glob given without --tokenizer; pass the SentencePiece .model "
                            "the shards were made with")
    directory = Path(config.data) if config.data else None
    if directory is None and config.val_glob is None:
        raise TrainingError("--train-glob given without --val-glob or --data; pass the validation shards too")
    train_glob = config.train_glob or _shard_glob(directory, "train")
    val_glob = config.val_glob or _shard_glob(directory, "val")
    resolve_shards(train_glob)
    resolve_shards(val_glob)
    return {"data_source": "shards", "tokenizer": str(Path(config.tokenizer).resolve()),
            "train_glob": train_glob, "val_glob": val_glob}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, document: dict) -> None:
    atomic_write_text(path, json.dumps(document, indent=2, default=str) + "\n")


def truncate_log(path: Path, last_step: int) -> None:
    """Keep the rows up to `last_step` (the resumed state's step); drop the rest."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a half-written last line from a killed run
        if row.get("step", 0) <= last_step and not row.get("final"):
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _float_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().float() for name, p in model.named_parameters()}


def _console_line(row: dict, iterations: int) -> str:
    parts = [f"step {row['step']:>5}/{iterations}", f"loss {row['loss']:.4f}"]
    if "jepa_loss" in row:
        parts.append(f"jepa {row['jepa_loss']:.4f} vicreg {row['vicreg_loss']:.4f} z_std {row['z_std_mean']:.3f}")
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f} val_bpb {row['val_bpb']:.4f}")
    parts.append(f"{row['step_ms']:.1f} ms/step")
    parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    parts.append(f"{row['elapsed_s']:.1f}s")
    return " | ".join(parts)


def run_training(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None,
                 console: Callable[[str], None] | None = None) -> RunResult:
    """Train per `config` into `config.out`. `on_step(step, row)` runs after every step
    (the tests use it to stop a run mid-way, as a crash would)."""
    dist = Distributed.from_environment()
    if dist.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    threads_before = torch.get_num_threads()
    tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    # the seed allows TF32 for the float32 matmuls autocast leaves (no effect on CPUs)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        return _run(config, dist, on_step, console)
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(config: TrainConfig, dist: Distributed, on_step, console) -> RunResult:  # noqa: C901 - the loop
    def say(message: str) -> None:
        if dist.is_main:
            (console or (lambda text: print(text, flush=True)))(message)

    device = resolve_device(config.device, dist)
    out_dir = Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out_dir / "train_state.pt", out_dir / "log.jsonl"
    accum_steps = config.grad_accum_steps or max(1, 8 // dist.world_size)
    micro_tokens = config.batch_tokens // (dist.world_size * accum_steps)
    sequences = micro_tokens // config.seq_len
    if sequences * config.seq_len * dist.world_size * accum_steps != config.batch_tokens:
        raise TrainingError(f"batch_tokens {config.batch_tokens} is not a multiple of seq_len {config.seq_len} x "
                            f"world_size {dist.world_size} x grad_accum_steps {accum_steps}; "
                            "change --batch-tokens")

    data = resolve_data(config, out_dir, dist, say)
    tokenizer = load_tokenizer(data["tokenizer"])
    if tokenizer.get_piece_size() > config.model.vocab_size:
        raise TrainingError(f"{data['tokenizer']}: {tokenizer.get_piece_size()} pieces exceed the model vocabulary "
                            f"{config.model.vocab_size}; raise --vocab-size")
    tokenizer_sha256 = file_sha256(data["tokenizer"])
    tables = build_byte_tables(tokenizer, config.model.vocab_size)
    val_tokens = load_tokens(data["val_glob"])
    stream = TokenStream(data["train_glob"])

    torch.manual_seed(config.seed)
    model = GPT(config.model)
    if config.bf16_master_weights:
        apply_seed_master_dtypes(model)
    model = model.to(device)
    jepa = None
    if config.jepa_weight > 0:
        # built after the dtype rounding: the target banks start as the rounded banks
        jepa = JepaObjective(model, config.jepa_latent_dim, config.jepa_ema_decay,
                             config.vicreg_var_weight, config.vicreg_cov_weight)
        if config.bf16_master_weights:
            apply_seed_master_dtypes(jepa)
        jepa = jepa.to(device)
    trainable = list(model.parameters()) + (list(jepa.parameters()) if jepa else [])
    dist.broadcast_from_main(trainable + (list(jepa.buffers()) if jepa else []))
    optimizers = build_optimizers(model, jepa, config)
    weight_ema = _float_copies(model) if config.weight_ema_decay > 0 else None
    swa_sum: dict[str, torch.Tensor] | None = None
    swa_count = 0
    step, elapsed_s, tokens_seen, last_loss = 0, 0.0, 0, float("nan")

    if config.resume and state_path.exists():
        state = load_training_state(state_path)
        if state["world_size"] != dist.world_size:
            raise TrainingError(f"{state_path}: saved with world_size {state['world_size']}, now {dist.world_size}; "
                                "resume with the same number of processes")
        if state["train_config"]["model"] != config.model.to_dict():
            raise TrainingError(f"{state_path}: saved for a different model config; resume with the run's "
                                "original model options (see run.json)")
        if (state["jepa"] is None) != (jepa is None):
            raise TrainingError(f"{state_path}: saved with a different --jepa-weight (on/off); resume with the "
                                "run's original options")
        model.load_state_dict(state["model"])
        if jepa is not None:
            jepa.load_state_dict(state["jepa"])
        optimizers.load_state_dict(state["optimizers"])
        if weight_ema is not None and state["weight_ema"] is not None:
            weight_ema = {name: tensor.to(device) for name, tensor in state["weight_ema"].items()}
        if state["swa"] is not None:
            swa_sum = {name: tensor.to(device) for name, tensor in state["swa"]["sum"].items()}
            swa_count = int(state["swa"]["count"])
        stream.restore(state["data"])
        step, elapsed_s = int(state["step"]), float(state["elapsed_s"])
        tokens_seen, last_loss = int(state["tokens_seen"]), float(state["last_loss"])
        if dist.is_main:
            truncate_log(log_path, step)
        say(f"resumed from {state_path} at step {step}")
    else:
        if config.resume:
            say(f"--resume: no {state_path} yet; starting a fresh run")
        if dist.is_main:
            log_path.write_text("", encoding="utf-8")
    dist.barrier()

    run_info = {
        "format": RUN_FORMAT, **data, "tokenizer_sha256": tokenizer_sha256,
        "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "world_size": dist.world_size, "train_config": config.to_dict(),
    }
    if dist.is_main:
        write_json_atomic(out_dir / "run.json", run_info)
    parameters = sum(p.numel() for p in model.parameters())
    say(f"model: {parameters:,} parameters | {config.model.num_layers}L x {config.model.model_dim} | "
        f"{'JEPA weight ' + str(config.jepa_weight) if jepa else 'vanilla cross-entropy'} | device {run_info['device']} "
        f"| world {dist.world_size} | {config.batch_tokens:,} tokens/step")

    objective: nn.Module = TrainingObjective(model, jepa)
    if config.compile:
        objective = torch.compile(objective)
    bf16_gradients = {id(bank) for bank in model.banks().values()} if config.bf16_master_weights else set()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" or config.bf16_master_weights)

    def validate() -> dict[str, float]:
        result = evaluate_bpb(model, val_tokens, tables, config.seq_len, device=device,
                              max_tokens=config.val_tokens or None)
        return {"val_loss": float(result.val_loss), "val_bpb": float(result.val_bpb)}

    def write_row(row: dict) -> None:
        if dist.is_main:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def save_state() -> None:
        if not dist.is_main:
            return
        save_training_state(state_path, {
            "step": step, "elapsed_s": elapsed_s, "tokens_seen": tokens_seen, "last_loss": last_loss,
            "world_size": dist.world_size, "train_config": config.to_dict(),
            "model": model.state_dict(), "jepa": jepa.state_dict() if jepa else None,
            "optimizers": optimizers.state_dict(),
            "weight_ema": weight_ema, "swa": {"sum": swa_sum, "count": swa_count} if swa_sum else None,
            "data": stream.state(),
        })

    def out_of_time() -> bool:
        over = torch.tensor(float(config.max_wall_s > 0 and elapsed_s >= config.max_wall_s), device=device)
        if dist.enabled:
            torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
        return bool(over.item())

    finished = step >= config.iterations or out_of_time()
    while not finished:
        started = time.perf_counter()
        multiplier = lr_multiplier(step, elapsed_s, config)
        in_warmdown = warmdown_factor(step, elapsed_s, config) < 1
        optimizers.set_schedule(multiplier, muon_momentum(step, config))
        # the seed's JEPA weight follows the whole LR multiplier: ramp-up, then anneal
        jepa_weight = config.jepa_weight * multiplier
        sums: dict[str, float] = {}
        for _ in range(accum_steps):
            # the seed's loader: each rank reads its own micro_tokens + 1 tokens
            chunk = stream.take(dist.world_size * (micro_tokens + 1))
            mine = torch.from_numpy(chunk[dist.rank * (micro_tokens + 1): (dist.rank + 1) * (micro_tokens + 1)])
            mine = mine.to(device)
            inputs, targets = mine[:-1].view(sequences, config.seq_len), mine[1:].view(sequences, config.seq_len)
            with autocast:
                parts = objective(inputs, targets)
            total = parts["loss"]
            if jepa is not None:
                total = total + jepa_weight * parts["jepa_loss"] + config.vicreg_weight * parts["vicreg_loss"]
            (total / accum_steps).backward()
            for name, value in {**parts, "total_loss": total}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / accum_steps
        clip_and_average_gradients(trainable, config, dist, bf16_gradients)
        optimizers.step()
        optimizers.zero_grad()
        if jepa is not None:
            jepa.update_target(model)
        if weight_ema is not None:
            decay = min(config.weight_ema_decay, step / (step + 10))  # the seed's warm-up, k = steps done before
            ema_update(weight_ema, dict(model.named_parameters()), decay)
        step += 1
        if config.swa_every > 0 and in_warmdown and step % config.swa_every == 0:
            if swa_sum is None:
                swa_sum = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in model.named_parameters()}
            for name, p in model.named_parameters():
                swa_sum[name].add_(p.detach().float())
            swa_count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_s = time.perf_counter() - started
        elapsed_s += step_s
        tokens_seen += config.batch_tokens
        if dist.enabled:  # log the mean over ranks, not rank 0's share
            names = sorted(sums)
            packed = torch.tensor([sums[name] for name in names], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(packed)
            sums = {name: float(value) / dist.world_size for name, value in zip(names, packed.tolist(), strict=True)}
        last_loss = sums["loss"]
        if not math.isfinite(last_loss):
            raise TrainingError(f"step {step}: loss is {last_loss}; training diverged, lower the learning rates")
        row = {"step": step, "loss": last_loss, "elapsed_s": round(elapsed_s, 4),
               "step_ms": step_s * 1000, "tokens_per_s": config.batch_tokens / step_s,
               "tokens": tokens_seen, "lr_mult": multiplier}
        if jepa is not None:
            row.update({"jepa_weight": jepa_weight, **{k: sums[k] for k in
                        ("total_loss", "jepa_loss", "vicreg_loss", "z_std_mean", "z_std_min")}})
        finished = step >= config.iterations or out_of_time()
        if config.val_every > 0 and (step % config.val_every == 0 or finished):
            row.update(validate())  # on the last step: the live weights, before averaging (the seed's too)
        if step % config.log_every == 0 or "val_loss" in row or finished:
            write_row(row)
            say(_console_line(row, config.iterations))
        if config.save_every > 0 and step % config.save_every == 0:
            save_state()
        if on_step is not None:
            on_step(step, row)

    save_state()
    weights = "raw"
    with torch.no_grad():
        averaged = None
        if swa_sum is not None and swa_count > 0:
            averaged, weights = {name: tensor / swa_count for name, tensor in swa_sum.items()}, f"swa({swa_count})"
        elif weight_ema is not None and step > 0 and step >= config.weight_ema_min_steps:
            averaged, weights = weight_ema, "ema"
        if averaged is not None:
            for name, p in model.named_parameters():
                p.copy_(averaged[name].to(p.dtype))
    final = validate()
    train_loss = last_loss if math.isfinite(last_loss) else None  # None: no step ran
    metrics = {"train_loss": train_loss, **final, "elapsed_s": elapsed_s, "tokens": tokens_seen,
               "weights": weights, "jepa_weight": config.jepa_weight}
    write_row({"step": step, "loss": train_loss, "elapsed_s": round(elapsed_s, 4), **final, "final": True,
               "weights": weights})
    say(f"final ({weights} weights) step {step}: val_loss {final['val_loss']:.4f} val_bpb {final['val_bpb']:.4f} "
        f"| {elapsed_s:.1f}s training")
    checkpoint_path = out_dir / "ckpt.pt"
    if dist.is_main:
        save_checkpoint(checkpoint_path, model, config.model.to_dict(), step, metrics, tokenizer_sha256,
                        config.to_dict())
        write_json_atomic(out_dir / "run.json", {**run_info, "final_metrics": metrics})
        say(f"wrote {checkpoint_path}")
    dist.barrier()
    return RunResult(out_dir=out_dir, checkpoint=checkpoint_path, step=step, metrics=metrics)

