"""The seed's master-weight dtypes (`bf16_master_weights`).

The seed builds its model in float32, casts all of it to bf16 (`.bfloat16()`), then
returns to float32 the four weight banks, every `CastedLinear` (here: the BigramHash
projection) and, through its `restore_fp32`, every parameter with fewer than two
dimensions or whose name contains one of its control patterns (`attn_scale`,
`mlp_scale`, `resid_mix`, `skip_weight`, `q_gain`, `bigram.scale`, `smear`). Its own
names miss two of those patterns, so the table below is what stays bf16 — trained,
averaged and checkpointed in bf16. Every other parameter went through bf16 once at
init (its initial values are bf16-rounded) and is float32 from then on.
"""

from __future__ import annotations

import re

import torch
from torch import nn

BF16_MASTER_RULES: tuple[tuple[str, str], ...] = (
    (r"^tok_emb\.weight$", "tied embedding: an nn.Embedding, not a CastedLinear"),
    (r"^bigram\.emb\.weight$", "BigramHash table: an nn.Embedding"),
    (r"^blocks\.\d+\.rm$", "residual mix: 2-D, and the seed's name `rm` misses its pattern `resid_mix`"),
    (r"^skip_w$", "U-Net skip weights: 2-D, and `skip_w` misses the pattern `skip_weight`"),
    (r"^(?:predictor\.\d+|ctx_proj|tgt_proj)\.weight$", "JEPA heads: plain nn.Linear inside the seed's model"),
)


def keeps_bf16(name: str) -> bool:
    return any(re.search(pattern, name) for pattern, _ in BF16_MASTER_RULES)


@torch.no_grad()
def apply_seed_master_dtypes(module: nn.Module) -> list[str]:
    """Round every parameter of `module` through bf16; keep those of the table in bf16,
    return the rest to float32. Returns the names kept in bf16."""
    kept = []
    for name, parameter in module.named_parameters():
        rounded = parameter.data.to(torch.bfloat16)
        if keeps_bf16(name):
            parameter.data = rounded
            kept.append(name)
        else:
            parameter.data = rounded.float()
    return kept
