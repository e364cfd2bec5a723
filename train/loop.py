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
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from eval.atomic import atomic_write_text
from eval.bpb import build_byte_tables
from eval.evaluate import evaluate_bpb
from eval.runtime import RankInfo, file_sha256
from eval.shards import load_tokens, resolve_shards
from train.checkpoint import load_training_state, save_checkpoint, save_training_state
from train.config import TrainConfig
from train.data import PreparedData, TokenStream, load_tokenizer, prepare_embedded_corpus
from train.jepa import JepaObjective, ema_update
from train.model import GPT
from train.optim import build_optimizers, lr_multiplier_for_decay, muon_momentum, warmdown_factor
from train.precision import apply_seed_master_dtypes

RUN_FORMAT = "artifactkit-run/1"


class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class Distributed(RankInfo):
    """torchrun's rank variables (eval.runtime.RankInfo, the only environment the trainer
    reads) and the collective operations the loop needs."""

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


def _on(tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor] | None:
    return None if tensors is None else {name: tensor.to(device) for name, tensor in tensors.items()}


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


@dataclass
class LoopState:
    """What the loop itself carries from step to step (the modules and optimizers keep
    their own state): counters, the data position and the weight averages. `to_dict` /
    `from_dict` are its part of `train_state.pt`."""

    step: int = 0
    elapsed_s: float = 0.0  # training seconds, validation excluded
    tokens_seen: int = 0
    last_loss: float = math.nan
    data: dict[str, int] = field(default_factory=dict)  # TokenStream.state()
    weight_ema: dict[str, torch.Tensor] | None = None
    swa_sum: dict[str, torch.Tensor] | None = None
    swa_count: int = 0

    def to_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed_s, "tokens_seen": self.tokens_seen,
                "last_loss": self.last_loss, "data": dict(self.data), "weight_ema": self.weight_ema,
                "swa": {"sum": self.swa_sum, "count": self.swa_count} if self.swa_sum else None}

    @classmethod
    def from_dict(cls, state: dict, device: torch.device | str = "cpu") -> LoopState:
        device = torch.device(device)
        swa = state.get("swa")
        return cls(step=int(state["step"]), elapsed_s=float(state["elapsed_s"]),
                   tokens_seen=int(state["tokens_seen"]), last_loss=float(state["last_loss"]),
                   data={key: int(value) for key, value in state["data"].items()},
                   weight_ema=_on(state.get("weight_ema"), device),
                   swa_sum=_on(swa["sum"], device) if swa else None, swa_count=int(swa["count"]) if swa else 0)


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
        return _run(Trainer(config, dist, console), on_step)
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(trainer: Trainer, on_step: Callable[[int, dict], None] | None) -> RunResult:
    """The loop: one optimizer step, then validation, log, save, as each is due."""
    config = trainer.config
    state = trainer.start()
    finished = trainer.finished(state)
    while not finished:
        row = trainer.train_step(state)
        finished = trainer.finished(state)
        if config.val_every > 0 and (state.step % config.val_every == 0 or finished):
            row.update(trainer.validate())  # on the last step: the live weights, before averaging (the seed's too)
        if state.step % config.log_every == 0 or "val_loss" in row or finished:
            trainer.write_row(row)
            trainer.say(_console_line(row, config.iterations))
        if config.save_every > 0 and state.step % config.save_every == 0:
            trainer.save_state(state)
        if on_step is not None:
            on_step(state.step, row)
    return trainer.finish(state)


class Trainer:
    """One run's fixed parts — device, batch geometry, data, model, JEPA head, optimizers —
    and what the loop does with them: start (fresh or resumed), one step, validation,
    the log, the resumable state and the final checkpoint."""

    def __init__(self, config: TrainConfig, dist: Distributed, console: Callable[[str], None] | None) -> None:
        self.config, self.dist, self.console = config, dist, console
        self.device = resolve_device(config.device, dist)
        self.out_dir = Path(config.out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.state_path, self.log_path = self.out_dir / "train_state.pt", self.out_dir / "log.jsonl"
        self.accum_steps = config.grad_accum_steps or max(1, 8 // dist.world_size)
        self.micro_tokens = config.batch_tokens // (dist.world_size * self.accum_steps)
        self.sequences = self.micro_tokens // config.seq_len
        if self.sequences * config.seq_len * dist.world_size * self.accum_steps != config.batch_tokens:
            raise TrainingError(f"batch_tokens {config.batch_tokens} is not a multiple of seq_len {config.seq_len} x "
                                f"world_size {dist.world_size} x grad_accum_steps {self.accum_steps}; "
                                "change --batch-tokens")
        self._load_data()
        self._build_model()

    def say(self, message: str) -> None:
        if self.dist.is_main:
            (self.console or (lambda text: print(text, flush=True)))(message)

    def _load_data(self) -> None:
        config = self.config
        self.data = resolve_data(config, self.out_dir, self.dist, self.say)
        tokenizer = load_tokenizer(self.data["tokenizer"])
        if tokenizer.get_piece_size() > config.model.vocab_size:
            raise TrainingError(f"{self.data['tokenizer']}: {tokenizer.get_piece_size()} pieces exceed the model "
                                f"vocabulary {config.model.vocab_size}; raise --vocab-size")
        self.tokenizer_sha256 = file_sha256(self.data["tokenizer"])
        self.tables = build_byte_tables(tokenizer, config.model.vocab_size)
        self.val_tokens = load_tokens(self.data["val_glob"])
        self.stream = TokenStream(self.data["train_glob"])

    def _build_model(self) -> None:
        config, device = self.config, self.device
        torch.manual_seed(config.seed)
        model = GPT(config.model)
        if config.bf16_master_weights:
            apply_seed_master_dtypes(model)
        self.model = model.to(device)
        self.jepa = None
        if config.jepa_weight > 0:
            # built after the dtype rounding: the target banks start as the rounded banks
            jepa = JepaObjective(self.model, config.jepa_latent_dim, config.jepa_ema_decay,
                                 config.vicreg_var_weight, config.vicreg_cov_weight)
            if config.bf16_master_weights:
                apply_seed_master_dtypes(jepa)
            self.jepa = jepa.to(device)
        self.trainable = list(self.model.parameters()) + (list(self.jepa.parameters()) if self.jepa else [])
        self.dist.broadcast_from_main(self.trainable + (list(self.jepa.buffers()) if self.jepa else []))
        self.optimizers = build_optimizers(self.model, self.jepa, config)
        self.objective: nn.Module = TrainingObjective(self.model, self.jepa)
        if config.compile:
            self.objective = torch.compile(self.objective)
        self.bf16_gradients = ({id(bank) for bank in self.model.banks().values()}
                               if config.bf16_master_weights else set())
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=device.type == "cuda" or config.bf16_master_weights)

    # --- start: fresh or resumed ---------------------------------------------------

    def start(self) -> LoopState:
        config, dist = self.config, self.dist
        if config.resume and self.state_path.exists():
            state = self._resume()
            self.say(f"resumed from {self.state_path} at step {state.step}")
        else:
            if config.resume:
                self.say(f"--resume: no {self.state_path} yet; starting a fresh run")
            if dist.is_main:
                self.log_path.write_text("", encoding="utf-8")
            state = LoopState(data=self.stream.state(),
                              weight_ema=_float_copies(self.model) if config.weight_ema_decay > 0 else None)
        dist.barrier()
        self.run_info = {
            "format": RUN_FORMAT, **self.data, "tokenizer_sha256": self.tokenizer_sha256,
            "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "world_size": dist.world_size, "train_config": config.to_dict(),
        }
        if dist.is_main:
            write_json_atomic(self.out_dir / "run.json", self.run_info)
        parameters = sum(p.numel() for p in self.model.parameters())
        objective = f"JEPA weight {config.jepa_weight}" if self.jepa else "vanilla cross-entropy"
        self.say(f"model: {parameters:,} parameters | {config.model.num_layers}L x {config.model.model_dim} | "
                 f"{objective} | device {self.run_info['device']} | world {dist.world_size} | "
                 f"{config.batch_tokens:,} tokens/step")
        return state

    def _resume(self) -> LoopState:
        saved, path = load_training_state(self.state_path), self.state_path
        if saved["world_size"] != self.dist.world_size:
            raise TrainingError(f"{path}: saved with world_size {saved['world_size']}, now {self.dist.world_size}; "
                                "resume with the same number of processes")
        if saved["train_config"]["model"] != self.config.model.to_dict():
            raise TrainingError(f"{path}: saved for a different model config; resume with the run's "
                                "original model options (see run.json)")
        if (saved["jepa"] is None) != (self.jepa is None):
            raise TrainingError(f"{path}: saved with a different --jepa-weight (on/off); resume with the "
                                "run's original options")
        self.model.load_state_dict(saved["model"])
        if self.jepa is not None:
            self.jepa.load_state_dict(saved["jepa"])
        self.optimizers.load_state_dict(saved["optimizers"])
        state = LoopState.from_dict(saved, self.device)
        if self.config.weight_ema_decay <= 0:
            state.weight_ema = None
        elif state.weight_ema is None:
            state.weight_ema = _float_copies(self.model)
        self.stream.restore(state.data)
        if self.dist.is_main:
            truncate_log(self.log_path, state.step)
        return state

    # --- one step ------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The seed's loader: each rank reads its own micro_tokens + 1 tokens."""
        width, rank = self.micro_tokens + 1, self.dist.rank
        chunk = self.stream.take(self.dist.world_size * width)
        mine = torch.from_numpy(chunk[rank * width: (rank + 1) * width]).to(self.device)
        shape = (self.sequences, self.config.seq_len)
        return mine[:-1].view(shape), mine[1:].view(shape)

    def train_step(self, state: LoopState) -> dict:
        """One optimizer step in the seed's order; advances `state`; returns the log row."""
        config, model, jepa = self.config, self.model, self.jepa
        started = time.perf_counter()
        warmdown = warmdown_factor(state.step, state.elapsed_s, config)
        multiplier = lr_multiplier_for_decay(state.step, warmdown, config)
        in_warmdown = warmdown < 1
        self.optimizers.set_schedule(multiplier, muon_momentum(state.step, config))
        # the seed's JEPA weight follows the whole LR multiplier: ramp-up, then anneal
        jepa_weight = config.jepa_weight * multiplier
        sums: dict[str, float] = {}
        for _ in range(self.accum_steps):
            inputs, targets = self.next_batch()
            with self.autocast:
                parts = self.objective(inputs, targets)
            total = parts["loss"]
            if jepa is not None:
                total = total + jepa_weight * parts["jepa_loss"] + config.vicreg_weight * parts["vicreg_loss"]
            (total / self.accum_steps).backward()
            for name, value in {**parts, "total_loss": total}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / self.accum_steps
        clip_and_average_gradients(self.trainable, config, self.dist, self.bf16_gradients)
        self.optimizers.step()
        self.optimizers.zero_grad()
        if jepa is not None:
            jepa.update_target(model)
        if state.weight_ema is not None:
            # the seed's warm-up of the decay, k = steps done before this one
            decay = min(config.weight_ema_decay, state.step / (state.step + 10))
            ema_update(state.weight_ema, dict(model.named_parameters()), decay)
        state.step += 1
        if config.swa_every > 0 and in_warmdown and state.step % config.swa_every == 0:
            self._collect_swa(state)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        step_s = time.perf_counter() - started
        state.elapsed_s += step_s
        state.tokens_seen += config.batch_tokens
        state.data = self.stream.state()
        sums = self._mean_over_ranks(sums)
        state.last_loss = sums["loss"]
        if not math.isfinite(state.last_loss):
            raise TrainingError(f"step {state.step}: loss is {state.last_loss}; training diverged, lower the "
                                "learning rates")
        row = {"step": state.step, "loss": state.last_loss, "elapsed_s": round(state.elapsed_s, 4),
               "step_ms": step_s * 1000, "tokens_per_s": config.batch_tokens / step_s,
               "tokens": state.tokens_seen, "lr_mult": multiplier}
        if jepa is not None:
            row.update({"jepa_weight": jepa_weight, **{k: sums[k] for k in
                        ("total_loss", "jepa_loss", "vicreg_loss", "z_std_mean", "z_std_min")}})
        return row

    def _collect_swa(self, state: LoopState) -> None:
        if state.swa_sum is None:
            state.swa_sum = {name: torch.zeros_like(p, dtype=torch.float32)
                             for name, p in self.model.named_parameters()}
        for name, p in self.model.named_parameters():
            state.swa_sum[name].add_(p.detach().float())
        state.swa_count += 1

    def _mean_over_ranks(self, sums: dict[str, float]) -> dict[str, float]:
        """Log the mean over ranks, not rank 0's share."""
        if not self.dist.enabled:
            return sums
        names = sorted(sums)
        packed = torch.tensor([sums[name] for name in names], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(packed)
        return {name: float(value) / self.dist.world_size for name, value in zip(names, packed.tolist(), strict=True)}

    def finished(self, state: LoopState) -> bool:
        """Out of steps, or (on any rank) out of wall-clock time."""
        config = self.config
        over = torch.tensor(float(config.max_wall_s > 0 and state.elapsed_s >= config.max_wall_s), device=self.device)
        if self.dist.enabled:
            torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
        return state.step >= config.iterations or bool(over.item())

    # --- validation, log, state, checkpoint -----------------------------------------

    def validate(self) -> dict[str, float]:
        result = evaluate_bpb(self.model, self.val_tokens, self.tables, self.config.seq_len, device=self.device,
                              max_tokens=self.config.val_tokens or None)
        return {"val_loss": float(result.val_loss), "val_bpb": float(result.val_bpb)}

    def write_row(self, row: dict) -> None:
        if self.dist.is_main:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def save_state(self, state: LoopState) -> None:
        if not self.dist.is_main:
            return
        save_training_state(self.state_path, {
            **state.to_dict(), "world_size": self.dist.world_size, "train_config": self.config.to_dict(),
            "model": self.model.state_dict(), "jepa": self.jepa.state_dict() if self.jepa else None,
            "optimizers": self.optimizers.state_dict(),
        })

    @torch.no_grad()
    def average_weights(self, state: LoopState) -> str:
        """Final weights: the SWA average when collected, else the weight EMA once the run
        reached `weight_ema_min_steps`, else the raw weights. Returns which."""
        averaged, weights = None, "raw"
        if state.swa_sum is not None and state.swa_count > 0:
            averaged = {name: tensor / state.swa_count for name, tensor in state.swa_sum.items()}
            weights = f"swa({state.swa_count})"
        elif state.weight_ema is not None and state.step > 0 and state.step >= self.config.weight_ema_min_steps:
            averaged, weights = state.weight_ema, "ema"
        if averaged is not None:
            for name, p in self.model.named_parameters():
                p.copy_(averaged[name].to(p.dtype))
        return weights

    def finish(self, state: LoopState) -> RunResult:
        config = self.config
        self.save_state(state)
        weights = self.average_weights(state)
        final = self.validate()
        train_loss = state.last_loss if math.isfinite(state.last_loss) else None  # None: no step ran
        metrics = {"train_loss": train_loss, **final, "elapsed_s": state.elapsed_s, "tokens": state.tokens_seen,
                   "weights": weights, "jepa_weight": config.jepa_weight}
        self.write_row({"step": state.step, "loss": train_loss, "elapsed_s": round(state.elapsed_s, 4), **final,
                        "final": True, "weights": weights})
        self.say(f"final ({weights} weights) step {state.step}: val_loss {final['val_loss']:.4f} "
                 f"val_bpb {final['val_bpb']:.4f} | {state.elapsed_s:.1f}s training")
        checkpoint_path = self.out_dir / "ckpt.pt"
        if self.dist.is_main:
            save_checkpoint(checkpoint_path, self.model, config.model.to_dict(), state.step, metrics,
                            self.tokenizer_sha256, config.to_dict())
            write_json_atomic(self.out_dir / "run.json", {**self.run_info, "final_metrics": metrics})
            self.say(f"wrote {checkpoint_path}")
        self.dist.barrier()
        return RunResult(out_dir=self.out_dir, checkpoint=checkpoint_path, step=state.step, metrics=metrics)
