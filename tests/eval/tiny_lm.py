"""Tiny real causal language models for evaluation tests (not a test module).

`build(config)` is a model factory in the `module:function` form the roundtrip CLI
resolves; tests copy this file next to their checkpoints and pass `tiny_lm:build`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn


class Block(nn.Module):
    """Pre-norm attention + MLP with GPT-2 tensor names (so artifactkit classifies them)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(dim, 3 * dim, bias=False)
        self.attn.c_proj = nn.Linear(dim, dim, bias=False)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.mlp.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden.shape
        query, key, value = self.attn.c_attn(self.ln_1(hidden)).chunk(3, dim=-1)

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, length, self.heads, -1).transpose(1, 2)

        attended = functional.scaled_dot_product_attention(split(query), split(key), split(value), is_causal=True)
        hidden = hidden + self.attn.c_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return hidden + self.mlp.c_proj(functional.gelu(self.mlp.c_fc(self.ln_2(hidden))))


class TinyCausalLM(nn.Module):
    """Learned positions + pre-norm blocks: small, causal and context-dependent, so
    window boundaries change its scores."""

    def __init__(
        self, vocab_size: int = 1024, dim: int = 32, heads: int = 2, layers: int = 1, max_seq_len: int = 128
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.wpe = nn.Embedding(max_seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.tok_emb(input_ids) + self.wpe(positions)[None]
        for block in self.blocks:
            hidden = block(hidden)
        return self.lm_head(self.ln_f(hidden))


class BigramLM(nn.Module):
    """Logits depend only on the current token: every target's score is independent of
    its context, so any window layout must give the same total."""

    def __init__(self, vocab_size: int = 1024) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table(input_ids)


class UniformLM(nn.Module):
    """Equal logits for every id: nll is exactly ln(vocab) per target."""

    def __init__(self, vocab_size: int = 1024) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*input_ids.shape, self.vocab_size, device=input_ids.device) + 0 * self.unused


def build(config: dict) -> nn.Module:
    """Factory: `config` holds TinyCausalLM's keyword arguments (extra keys ignored)."""
    names = ("vocab_size", "dim", "heads", "layers", "max_seq_len")
    return TinyCausalLM(**{name: config[name] for name in names if name in config})
