"""JEPA self-distillation as the seed does it: an EMA target encoder, latent
projections, a predictor from `z_ctx[t]` to `z_tgt[t+1]` trained by MSE against a
stop-gradient target, and VICReg variance + covariance on the whole `z_tgt`.

The target encoder is the context encoder run with EMA copies of its four weight
banks (embeddings and control scalars are shared), so only the banks are copied.
Everything here is training-only: `predictor.*`, `ctx_proj.*`, `tgt_proj.*` and the
target banks never enter the checkpoint's state_dict. A run with `jepa_weight = 0`
never constructs this module.

Shapes and init follow the seed: predictor latent -> latent -> latent without biases,
normal(0, 0.02); projections model_dim -> latent without bias, orthogonal. At latent
256 and width 512 the heads hold 393,216 parameters. The MSE gives `tgt_proj` no
gradient (its target is detached); VICReg does train `tgt_proj`, as in the seed. How
the terms are weighted (JEPA ramped and annealed with the LR, VICReg constant) is the
loop's business (`train.loop`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model import GPT

PREDICTOR_INIT_STD = 0.02


@torch.no_grad()
def ema_update(targets: dict[str, torch.Tensor], sources: dict[str, torch.Tensor], decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, in place, for each name (the
    seed's mul_/add_ order, so the float rounding is the seed's too)."""
    for name, target in targets.items():
        target.mul_(decay).add_(sources[name].detach().to(target.dtype), alpha=1.0 - decay)


def vicreg_terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(variance loss, covariance loss, per-dimension std) of latents z [..., D], as the
    seed's `vicreg_loss`: unbiased std without an epsilon, hinge at 1, squared
    off-diagonal covariance summed and divided by D. Runs in z's dtype."""
    flat = z.reshape(-1, z.size(-1))
    std = flat.std(dim=0)
    variance = F.relu(1.0 - std).mean()
    count, dim = flat.shape
    centered = flat - flat.mean(dim=0)
    covariance = (centered.T @ centered) / max(count - 1, 1)
    off_diagonal = (covariance.pow(2).sum() - covariance.diagonal().pow(2).sum()) / dim
    return variance, off_diagonal, std


class JepaObjective(nn.Module):
    """Training-only JEPA head for one context encoder."""

    def __init__(self, model: GPT, latent_dim: int = 256, ema_decay: float = 0.9995,
                 var_weight: float = 1.0, cov_weight: float = 0.04) -> None:
        super().__init__()
        d = model.config.model_dim
        self.predictor = nn.Sequential(
            nn.Linear(latent_dim, latent_dim, bias=False), nn.GELU(), nn.Linear(latent_dim, latent_dim, bias=False)
        )
        self.ctx_proj = nn.Linear(d, latent_dim, bias=False)
        self.tgt_proj = nn.Linear(d, latent_dim, bias=False)
        self.ema_decay = ema_decay
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        for name, bank in model.banks().items():
            self.register_buffer(f"target_{name}", bank.detach().clone().float())
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in self.predictor:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=PREDICTOR_INIT_STD)
        nn.init.orthogonal_(self.ctx_proj.weight)
        nn.init.orthogonal_(self.tgt_proj.weight)

    def target_banks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"target_{name}") for name in GPT.bank_names}

    @torch.no_grad()
    def update_target(self, model: GPT) -> None:
        ema_update(self.target_banks(), model.banks(), self.ema_decay)

    def forward(self, model: GPT, input_ids: torch.Tensor, context_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """JEPA (MSE) and VICReg losses plus z_tgt std statistics, for hidden states
        [B, T, d] the context encoder produced from `input_ids`."""
        with torch.no_grad():
            target_hidden = model.hidden_states(input_ids, banks=self.target_banks())
        z_context = self.ctx_proj(context_hidden)
        z_target = self.tgt_proj(target_hidden)
        prediction = self.predictor(z_context[:, :-1])
        # stop-gradient: the MSE trains the predictor and the context side only
        jepa = F.mse_loss(prediction, z_target[:, 1:].detach())
        variance, covariance, std = vicreg_terms(z_target)
        return {
            "jepa_loss": jepa,
            "vicreg_loss": self.var_weight * variance + self.cov_weight * covariance,
            "z_std_mean": std.mean().detach(),
            "z_std_min": std.min().detach(),
        }
