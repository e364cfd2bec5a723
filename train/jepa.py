"""JEPA self-distillation: an EMA target encoder, latent projections, a predictor from
`z_ctx[t]` to `z_tgt[t+1]`, and VICReg variance + covariance on `z_tgt`.

The target encoder is the context encoder run with EMA copies of its four weight
banks (embeddings and control scalars are shared), so only the banks are copied.
Everything here is training-only: `predictor.*`, `ctx_proj.*`, `tgt_proj.*` and the
target banks never enter the checkpoint's state_dict. A run with `jepa_weight = 0`
never constructs this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model import GPT


@torch.no_grad()
def ema_update(targets: dict[str, torch.Tensor], sources: dict[str, torch.Tensor], decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, in place, for each name."""
    for name, target in targets.items():
        target.lerp_(sources[name].detach().to(target.dtype), 1.0 - decay)


def vicreg_terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(variance loss, covariance loss, per-dimension std) of latents z [..., D]."""
    flat = z.reshape(-1, z.size(-1)).float()
    count, dim = flat.shape
    std = torch.sqrt(flat.var(dim=0) + 1e-4)
    variance = F.relu(1.0 - std).mean()
    centered = flat - flat.mean(dim=0)
    covariance = centered.T @ centered / max(count - 1, 1)
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return variance, off_diagonal.square().sum() / dim, std


class JepaObjective(nn.Module):
    """Training-only JEPA head for one context encoder."""

    def __init__(self, model: GPT, latent_dim: int = 256, ema_decay: float = 0.9995,
                 var_weight: float = 1.0, cov_weight: float = 0.04) -> None:
        super().__init__()
        d = model.config.model_dim
        self.ctx_proj = nn.Linear(d, latent_dim, bias=False)
        self.tgt_proj = nn.Linear(d, latent_dim, bias=False)
        self.predictor = nn.Sequential(
            nn.Linear(latent_dim, 2 * latent_dim), nn.GELU(), nn.Linear(2 * latent_dim, latent_dim)
        )
        self.ema_decay = ema_decay
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        for name, bank in model.banks().items():
            self.register_buffer(f"target_{name}", bank.detach().clone().float())

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
        z_context = self.ctx_proj(context_hidden[:, :-1])
        prediction = self.predictor(z_context)
        z_target = self.tgt_proj(target_hidden[:, 1:])
        jepa = F.mse_loss(prediction.float(), z_target.float())
        variance, covariance, std = vicreg_terms(z_target)
        return {
            "jepa_loss": jepa,
            "vicreg_loss": self.var_weight * variance + self.cov_weight * covariance,
            "z_std_mean": std.mean().detach(),
            "z_std_min": std.min().detach(),
        }
