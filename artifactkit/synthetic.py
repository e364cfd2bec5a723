"""Seed-shaped synthetic state dicts for benchmarks and tests.

Heavy-tailed (Student-t, 4 degrees of freedom) weights with a log-normal scale per
row, in the seed's banked layout or its unbanked twin. Synthetic weights are NOT a
stand-in for trained ones when estimating compressed size (random i.i.d. weights
compress differently); benchmarks say which they used.
"""

from __future__ import annotations

import torch


def _heavy_tailed(generator: torch.Generator, *shape: int, std: float = 0.02) -> torch.Tensor:
    normal = torch.randn(*shape, generator=generator)
    chi2 = torch.randn(4, *shape, generator=generator).pow(2).sum(0) / 4  # chi-square(4) / 4
    rows = torch.exp(0.3 * torch.randn(*shape[:-1], 1, generator=generator))
    return normal / chi2.sqrt() * std / 1.41 * rows


def seed_shaped_state_dict(layers: int = 11, dim: int = 512, kv_heads: int = 4, head_dim: int = 64,
                           mlp_mult: int = 3, vocab: int = 1024, seed: int = 0) -> dict[str, torch.Tensor]:
    """The seed's banked names and shapes (about 27M parameters at the defaults)."""
    generator = torch.Generator().manual_seed(seed)
    kv_dim, hidden = kv_heads * head_dim, mlp_mult * dim
    heads = dim // head_dim
    state = {
        "tok_emb.weight": _heavy_tailed(generator, vocab, dim),
        "bigram.emb.weight": _heavy_tailed(generator, 2048, 128),
        "bigram.proj.weight": _heavy_tailed(generator, dim, 128),
        "bigram.scale": torch.tensor(0.05),
        "smear.gate": torch.zeros(dim),
        "skip_w": torch.ones(layers // 2, dim),
        "qo_bank": _heavy_tailed(generator, 2 * layers, dim, dim),
        "kv_bank": _heavy_tailed(generator, 2 * layers, kv_dim, dim),
        "mlp_up_bank": _heavy_tailed(generator, layers, hidden, dim),
        "mlp_down_bank": _heavy_tailed(generator, layers, dim, hidden),
    }
    for index in range(layers):
        state[f"blocks.{index}.attn.qg"] = torch.full((heads,), 1.5)
        state[f"blocks.{index}.as_"] = torch.ones(dim)
        state[f"blocks.{index}.ms"] = torch.ones(dim)
        state[f"blocks.{index}.rm"] = torch.stack([torch.ones(dim), torch.zeros(dim)])
    return state


def unbanked_twin(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the seed's unbanked names (`b.N.a.q`, `b.N.m.u`, ...),
    written independently of `artifactkit.plan.banks` so tests can compare the two."""
    out = {}
    for name, tensor in state.items():
        if name in ("qo_bank", "kv_bank"):
            layers = tensor.shape[0] // 2
            first, second = ("q", "o") if name == "qo_bank" else ("k", "v")
            for index in range(layers):
                out[f"b.{index}.a.{first}"] = tensor[index].clone()
                out[f"b.{index}.a.{second}"] = tensor[layers + index].clone()
        elif name in ("mlp_up_bank", "mlp_down_bank"):
            role = "u" if name == "mlp_up_bank" else "d"
            for index in range(tensor.shape[0]):
                out[f"b.{index}.m.{role}"] = tensor[index].clone()
        else:
            out[name] = tensor.clone()
    return out
