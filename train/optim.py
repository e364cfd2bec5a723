"""Optimisation as the seed does it: Muon (Newton-Schulz orthogonalised Nesterov momentum,
batched over the banks' leading dimension) for the weight banks, AdamW for embeddings,
control scalars and the JEPA heads, and the schedules (LR warm-up, cosine warm-down by
steps or by wall clock, Muon momentum warm-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from train.config import TrainConfig
from train.model import GPT

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic that pushes singular values toward 1


def newton_schulz(grad: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise the last two dims of `grad` (batched over the rest):
    singular values land near 1 (roughly 0.7..1.2), singular vectors are kept."""
    a, b, c = NS_COEFFICIENTS
    x = grad.to(torch.bfloat16) if grad.is_cuda else grad.float()
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.mT
    return x


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov) whose update is orthogonalised per matrix, with decoupled
    weight decay. A 3-D parameter is a bank: each [rows, cols] slice is one matrix.

    The seed's form: buffer <- momentum * buffer + grad, update = grad + momentum *
    buffer (Nesterov). `momentum_dtype` bfloat16 keeps the gradient and the buffer in
    bf16, as the seed's Muon does (with `bf16_master_weights`)."""

    def __init__(self, params, lr: float, momentum: float = 0.95, weight_decay: float = 0.0,
                 ns_steps: int = 5, nesterov: bool = True, momentum_dtype: torch.dtype | None = None) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "ns_steps": ns_steps, "nesterov": nesterov})
        self.momentum_dtype = momentum_dtype

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim signature
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad if self.momentum_dtype is None else param.grad.to(self.momentum_dtype)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"]
                buffer.mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                update = newton_schulz(update, group["ns_steps"])
                rows, cols = param.shape[-2], param.shape[-1]
                if group["weight_decay"] > 0:
                    param.mul_(1 - lr * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-lr * max(1.0, rows / cols) ** 0.5)
        return None


@dataclass
class Optimizers:
    muon: Muon
    adam: torch.optim.AdamW

    def all(self) -> list[torch.optim.Optimizer]:
        return [self.muon, self.adam]

    def zero_grad(self) -> None:
        for optimizer in self.all():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.all():
            optimizer.step()

    def set_schedule(self, lr_multiplier: float, muon_momentum: float) -> None:
        for optimizer in self.all():
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_multiplier
        for group in self.muon.param_groups:
            group["momentum"] = muon_momentum

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adam.load_state_dict(state["adam"])


EMBEDDING_NAMES = ("tok_emb.weight", "bigram.emb.weight")


def build_optimizers(model: GPT, jepa: nn.Module | None, config: TrainConfig) -> Optimizers:
    """Banks -> Muon; embeddings, control scalars and JEPA heads -> AdamW groups (the
    seed's three optimizers, with its scalar group split into scalars and JEPA heads so
    each keeps its own LR option; the seed gives both scalar_lr and its weight decay)."""
    named = dict(model.named_parameters())
    banks = [named[name] for name in GPT.bank_names]
    embeddings = [named[name] for name in EMBEDDING_NAMES]
    scalars = [p for name, p in named.items() if name not in GPT.bank_names and name not in EMBEDDING_NAMES]
    momentum_dtype = torch.bfloat16 if config.bf16_master_weights else None
    muon = Muon([{"params": banks, "base_lr": config.matrix_lr}], lr=config.matrix_lr,
                momentum=config.muon_momentum_start, weight_decay=config.muon_weight_decay,
                ns_steps=config.muon_ns_steps, momentum_dtype=momentum_dtype)
    groups = [
        {"params": embeddings, "base_lr": config.embed_lr, "lr": config.embed_lr,
         "weight_decay": config.adam_weight_decay},
        {"params": scalars, "base_lr": config.scalar_lr, "lr": config.scalar_lr,
         "weight_decay": config.scalar_weight_decay},
    ]
    if jepa is not None:
        groups.append({"params": list(jepa.parameters()), "base_lr": config.jepa_lr, "lr": config.jepa_lr,
                       "weight_decay": config.scalar_weight_decay})
    adam = torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                             fused=banks[0].is_cuda or None)
    return Optimizers(muon=muon, adam=adam)


def training_progress(step: int, elapsed_s: float, config: TrainConfig) -> float:
    """Fraction of the run done: by steps, or by wall clock when that is further along."""
    progress = step / max(config.iterations, 1)
    if config.max_wall_s > 0:
        progress = max(progress, elapsed_s / config.max_wall_s)
    return min(progress, 1.0)


def _cosine(t: float) -> float:
    """1 at t = 0 down to 0 at t = 1."""
    return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def warmdown_factor(step: int, elapsed_s: float, config: TrainConfig) -> float:
    """1 before the warm-down, then a cosine to 0 at the end of the run.

    `warmdown_steps > 0` is the seed's rule: without a wall-clock cap, the last
    `warmdown_steps` of `iterations`; with one, the last `warmdown_steps` steps' worth of
    time at the average step time so far (the iteration count then plays no part).
    Otherwise the cosine spans the last `warmdown_frac` of the run, measured by steps or
    by the clock, whichever is further along."""
    if config.warmdown_steps > 0:
        if config.max_wall_s > 0:
            window_s = config.warmdown_steps * elapsed_s / max(step, 1)
            remaining_s = max(config.max_wall_s - elapsed_s, 0.0)
            return _cosine(1 - remaining_s / max(window_s, 1e-12)) if remaining_s <= window_s else 1.0
        start = max(config.iterations - config.warmdown_steps, 0)
        return _cosine((step - start) / config.warmdown_steps) if step >= start else 1.0
    progress = training_progress(step, elapsed_s, config)
    if config.warmdown_frac <= 0 or progress <= 1 - config.warmdown_frac:
        return 1.0
    return _cosine((progress - (1 - config.warmdown_frac)) / config.warmdown_frac)


def warmup_factor(step: int, config: TrainConfig) -> float:
    """The seed's linear warm-up: step / warmup_steps, so the first step has LR 0."""
    return min(step / config.warmup_steps, 1.0) if config.warmup_steps > 0 else 1.0


def lr_multiplier(step: int, elapsed_s: float, config: TrainConfig) -> float:
    """Warm-up times warm-down (floored at `min_lr_frac` of the way down). The JEPA
    weight follows the same multiplier."""
    return lr_multiplier_for_decay(step, warmdown_factor(step, elapsed_s, config), config)


def lr_multiplier_for_decay(step: int, decay: float, config: TrainConfig) -> float:
    """`lr_multiplier` given the step's `warmdown_factor` (for a caller that needs it too)."""
    return warmup_factor(step, config) * (config.min_lr_frac + (1 - config.min_lr_frac) * decay)


def muon_momentum(step: int, config: TrainConfig) -> float:
    if config.muon_momentum_warmup_steps <= 0:
        return config.muon_momentum
    t = min(step / config.muon_momentum_warmup_steps, 1.0)
    return (1 - t) * config.muon_momentum_start + t * config.muon_momentum
