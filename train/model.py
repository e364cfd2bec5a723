"""The context-encoder GPT: its typed config, its parameters (banked so Muon can
orthogonalise every layer in one batched call) and its forward pass.

Every weight matmul goes through `torch.nn.functional.linear`, because artifactkit's
GPTQ calibration intercepts `F.linear` calls to capture activations. State-dict names
are a contract with artifactkit's classifier (see `GPT` below); do not rename them.

The default config reproduces the seed (`JEPA_LM` in the seed's `train_gpt.py`) exactly,
its bugs included: with identical weights the logits agree to float tolerance
(`tests/train/test_seed_parity.py`). Each departure is a named option, off by default
(`skip_placement`, `rope_fix_long_context`, `bigram_fix_init`); train/README.md lists
them with the evidence.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_VERSION = 2
# What version-1 configs (written before the seed-faithful model, without a
# `config_version` key) meant by the options added in version 2: the model they were
# trained as.
VERSION_1_VALUES = {"skip_placement": "before_block", "rope_fix_long_context": True, "bigram_fix_init": True}
SKIP_PLACEMENTS = ("after_block", "before_block")
# The seed's Rotary is built with train_seq_len=1024: longer sequences take its
# (mis-parenthesised) long-context branch.
SEED_ROPE_TRAIN_LEN = 1024


@dataclass
class ModelConfig:
    """Architecture of the context encoder. Serialised verbatim into checkpoints
    (`config`), and `build_model` rebuilds the module from that dict."""

    vocab_size: int = field(default=1024, metadata={"help": "Vocabulary size (tied input/output embedding)."})
    num_layers: int = field(default=11, metadata={"help": "Number of transformer blocks."})
    model_dim: int = field(default=512, metadata={"help": "Residual stream width d."})
    num_heads: int = field(default=8, metadata={"help": "Query heads; head_dim = model_dim / num_heads."})
    num_kv_heads: int = field(default=4, metadata={"help": "Key/value heads (grouped-query attention)."})
    mlp_mult: int = field(default=3, metadata={"help": "MLP hidden width as a multiple of model_dim."})
    rope_dims: int = field(default=16, metadata={"help": "Head dims that get rotary position encoding (partial RoPE)."})
    rope_base: float = field(default=10000.0, metadata={"help": "RoPE frequency base."})
    xsa_last_n: int = field(default=4, metadata={"help": "Apply XSA (remove the own-value component) on the last N layers."})
    bigram_vocab: int = field(default=2048, metadata={"help": "Buckets of the hashed (previous, current) token embedding."})
    bigram_dim: int = field(default=128, metadata={"help": "Width of the BigramHash embedding before its projection to d."})
    logit_softcap: float = field(default=30.0, metadata={"help": "Logits are softcapped as c * tanh(logits / c)."})
    qk_gain_init: float = field(default=1.5, metadata={"help": "Initial per-head query gain after q/k RMSNorm."})
    embed_init_std: float = field(default=0.005, metadata={"help": "Std of the tied embedding's normal init."})
    skip_placement: str = field(default="after_block", metadata={"help": (
        "Where U-Net skip j joins decoder block E+j (E = num_layers // 2): after_block (the seed: added to the "
        "block's output) or before_block (modded-nanogpt: added to its input; a departure).")})
    rope_fix_long_context: bool = field(default=False, metadata={"help": (
        "Departure: standard RoPE at every length. Off (the seed): sequences longer than 1,024 use the seed's "
        "mis-parenthesised frequencies, ~5e-5 rad/token at 2,048 (almost no positional signal).")})
    bigram_fix_init: bool = field(default=False, metadata={"help": (
        "Departure: init the BigramHash projection with std bigram_dim^-0.5 so the feature learns. Off (the seed): "
        "table and projection both start at zero, so their gradients stay zero and BigramHash is dead.")})
    config_version: int = field(default=CONFIG_VERSION, metadata={"help": (
        "Format of this config (not a command-line option). Dicts without it are version 1, written before the "
        "seed-faithful model; they rebuild with before_block skips, the RoPE fix and the BigramHash fix.")})

    def __post_init__(self) -> None:
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}; "
                             "choose a head count that divides it")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}; "
                             "grouped-query attention needs whole groups")
        head_dim = self.model_dim // self.num_heads
        if self.rope_dims % 2 or self.rope_dims > head_dim or self.rope_dims < 4:
            raise ValueError(f"rope_dims {self.rope_dims} must be even, at least 4 and at most head_dim {head_dim}")
        if not 0 <= self.xsa_last_n <= self.num_layers:
            raise ValueError(f"xsa_last_n {self.xsa_last_n} must lie in [0, num_layers={self.num_layers}]")
        if self.skip_placement not in SKIP_PLACEMENTS:
            raise ValueError(f"skip_placement {self.skip_placement!r} is not one of {list(SKIP_PLACEMENTS)}")
        if self.config_version not in (1, CONFIG_VERSION):
            raise ValueError(f"config_version {self.config_version} is unknown; this trainer reads 1 and "
                             f"{CONFIG_VERSION}")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_mult * self.model_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> ModelConfig:
        """The config a checkpoint recorded. A dict without `config_version` predates the
        seed-faithful options; it gets the values its model was trained with."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys are {sorted(known)}")
        config = dict(config)
        if config.get("config_version", 1) == 1:
            config = {**VERSION_1_VALUES, **config, "config_version": 1}
        return cls(**config)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(logits / cap)


class BigramHash(nn.Module):
    """Embedding of the hashed (previous, current) token pair, projected to d and
    scaled by a learnable scalar. Initialised by `GPT.reset_parameters`."""

    def __init__(self, buckets: int, dim: int, model_dim: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.emb = nn.Embedding(buckets, dim)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def bucket_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        current = input_ids.long()
        previous = torch.zeros_like(current)
        previous[:, 1:] = current[:, :-1]
        hashed = torch.bitwise_xor(36313 * current, 27191 * previous) % (self.buckets - 1)
        # The first position has no previous token: it gets the reserved last bucket.
        hashed[:, 0] = self.buckets - 1
        return hashed

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.emb(self.bucket_ids(input_ids))
        projected = F.linear(embedded, self.proj.weight.to(embedded.dtype))  # the seed's CastedLinear
        return projected * self.scale.to(projected.dtype)


class SmearGate(nn.Module):
    """Per-channel gate that mixes each position's embedding with the previous one's."""

    def __init__(self, model_dim: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(model_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.sigmoid(self.gate.to(x.dtype))
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        return (1 - weight) * x + weight * previous


class Rotary(nn.Module):
    """cos/sin tables for partial RoPE (only the first `rope_dims` head dims rotate)."""

    def __init__(self, rope_dims: int, base: float, fix_long_context: bool) -> None:
        super().__init__()
        self.rope_dims, self.base, self.fix_long_context = rope_dims, base, fix_long_context
        exponents = torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims
        self.register_buffer("exponents", exponents, persistent=False)
        self.register_buffer("inverse_freq", 1.0 / (base ** exponents), persistent=False)

    def frequencies(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Radians per position for each rotated pair."""
        if seq_len <= SEED_ROPE_TRAIN_LEN or self.fix_long_context:
            return self.inverse_freq.to(device)
        # The seed's long-context branch, verbatim: 1/(base*(T/1024)**(rd/(rd-2))**(i/rd)).
        # `**` binds right to left, so the exponent i/rd lands on rd/(rd-2) instead of on
        # the scaled base: every frequency becomes ~1/(2.0..2.2 * base), ~5e-5 rad/token.
        rd, ratio = self.rope_dims, seq_len / SEED_ROPE_TRAIN_LEN
        exponents = self.exponents.to(device)
        return 1.0 / (self.base * ratio ** ((rd / (rd - 2)) ** exponents))

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 cos/sin tables [1, seq_len, 1, rope_dims / 2] (each attention casts them)."""
        frequencies = self.frequencies(seq_len, device)
        angles = torch.outer(torch.arange(seq_len, device=device, dtype=frequencies.dtype), frequencies)
        return angles.cos()[None, :, None, :].float(), angles.sin()[None, :, None, :].float()

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.rope_dims // 2
        rotated, passthrough = x[..., : self.rope_dims], x[..., self.rope_dims :]
        first, second = rotated[..., :half], rotated[..., half:]
        out = torch.cat([first * cos + second * sin, first * (-sin) + second * cos], dim=-1)
        return torch.cat([out, passthrough], dim=-1)


@functools.cache
def _flash_attention():
    """flash-attn's function when importable (CUDA only), else None -> SDPA."""
    try:
        from flash_attn_interface import flash_attn_func  # FlashAttention-3 (Hopper)
    except ImportError:
        try:
            from flash_attn import flash_attn_func
        except ImportError:
            return None
    return flash_attn_func


class Block(nn.Module):
    """Control parameters of one transformer block. Its weights live in the model's
    banks (index = layer), so the block holds only gains, scales and mixes."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        d = config.model_dim
        self.attn = nn.Module()
        self.attn.qg = nn.Parameter(torch.full((config.num_heads,), config.qk_gain_init))
        self.as_ = nn.Parameter(torch.ones(d))
        self.ms = nn.Parameter(torch.ones(d))
        # rm[0] scales the running stream, rm[1] mixes back the embedding stream x0.
        self.rm = nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)]))
        self.layer_index = layer_index
        self.norm_scale = 1.0 / math.sqrt(layer_index + 1)
        self.use_xsa = layer_index >= config.num_layers - config.xsa_last_n


class GPT(nn.Module):
    """Context encoder. State-dict names (a contract with artifactkit):
    `tok_emb.weight` (tied head), `qo_bank [2L,d,d]` (Q of layer i at i, output
    projection at L+i), `kv_bank [2L,kv_dim,d]` (K at i, V at L+i), `mlp_up_bank [L,h,d]`,
    `mlp_down_bank [L,d,h]`, `bigram.*`, `smear.gate`, `skip_w`, `blocks.N.{attn.qg,as_,ms,rm}`.
    """

    bank_names = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers, d = config.num_layers, config.model_dim
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.bigram = BigramHash(config.bigram_vocab, config.bigram_dim, d)
        self.smear = SmearGate(d)
        self.qo_bank = nn.Parameter(torch.empty(2 * layers, d, d))
        self.kv_bank = nn.Parameter(torch.empty(2 * layers, config.kv_dim, d))
        self.mlp_up_bank = nn.Parameter(torch.empty(layers, config.mlp_hidden, d))
        self.mlp_down_bank = nn.Parameter(torch.empty(layers, d, config.mlp_hidden))
        self.num_encoder_layers = layers // 2
        self.num_decoder_layers = layers - self.num_encoder_layers
        self.skip_w = nn.Parameter(torch.ones(min(self.num_encoder_layers, self.num_decoder_layers), d))
        self.blocks = nn.ModuleList(Block(config, i) for i in range(layers))
        self.rotary = Rotary(config.rope_dims, config.rope_base, config.rope_fix_long_context)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        layers = self.config.num_layers
        nn.init.normal_(self.tok_emb.weight, std=self.config.embed_init_std)
        for i in range(layers):
            nn.init.orthogonal_(self.qo_bank[i])
            nn.init.orthogonal_(self.kv_bank[i])
            nn.init.orthogonal_(self.kv_bank[layers + i])
            nn.init.orthogonal_(self.mlp_up_bank[i])
        # Output projections start at zero: every block begins as the identity.
        self.qo_bank[layers:].zero_()
        self.mlp_down_bank.zero_()
        nn.init.zeros_(self.bigram.emb.weight)
        if self.config.bigram_fix_init:
            nn.init.normal_(self.bigram.proj.weight, std=self.config.bigram_dim**-0.5)
        else:
            nn.init.zeros_(self.bigram.proj.weight)  # the seed's: with both zero, no gradient ever flows

    def banks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.bank_names}

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(input_ids) + self.bigram(input_ids)
        return self.smear(rms_norm(x))

    def attention(self, block: Block, x: torch.Tensor, banks: dict[str, torch.Tensor],
                  rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        config, layers, i = self.config, self.config.num_layers, block.layer_index
        batch, seq_len, _ = x.shape
        heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        q = F.linear(x, banks["qo_bank"][i].to(x.dtype)).view(batch, seq_len, heads, head_dim)
        k = F.linear(x, banks["kv_bank"][i].to(x.dtype)).view(batch, seq_len, kv_heads, head_dim)
        v = F.linear(x, banks["kv_bank"][layers + i].to(x.dtype)).view(batch, seq_len, kv_heads, head_dim)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = (table.to(q.dtype) for table in rope)
        # the query gain after the rotation, as the seed applies it
        q = self.rotary.apply(q, cos, sin) * block.attn.qg.to(q.dtype)[None, None, :, None]
        k = self.rotary.apply(k, cos, sin)
        flash = _flash_attention() if x.is_cuda else None
        if flash is not None:
            half = torch.bfloat16
            y = flash(q.to(half), k.to(half), v.to(half), causal=True)
            y = y[0] if isinstance(y, tuple) else y
        else:
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                enable_gqa=heads != kv_heads,
            ).transpose(1, 2)
        if block.use_xsa:
            # XSA: remove from each head's output its component along the token's own
            # (normalised) value vector, so attention carries only other tokens' content.
            grouped = y.reshape(batch, seq_len, kv_heads, heads // kv_heads, head_dim)
            direction = F.normalize(v, dim=-1).unsqueeze(3)
            grouped = grouped - (grouped * direction).sum(-1, keepdim=True) * direction
            y = grouped.reshape(batch, seq_len, heads, head_dim)
        return F.linear(y.reshape(batch, seq_len, heads * head_dim), banks["qo_bank"][layers + i].to(x.dtype))

    def mlp(self, block: Block, x: torch.Tensor, banks: dict[str, torch.Tensor]) -> torch.Tensor:
        i = block.layer_index
        hidden = F.leaky_relu(F.linear(x, banks["mlp_up_bank"][i].to(x.dtype)), 0.5).square()
        return F.linear(hidden, banks["mlp_down_bank"][i].to(x.dtype))

    def block_forward(self, block: Block, x: torch.Tensor, x0: torch.Tensor, banks: dict[str, torch.Tensor],
                      rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mix = block.rm.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + block.as_.to(x.dtype) * self.attention(block, rms_norm(x) * block.norm_scale, banks, rope)
        return x + block.ms.to(x.dtype) * self.mlp(block, rms_norm(x) * block.norm_scale, banks)

    def hidden_states(self, input_ids: torch.Tensor, banks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Final normalised hidden states [B, T, d]. `banks` overrides the four weight
        banks (the JEPA target encoder runs this with its EMA copies)."""
        banks = self.banks() if banks is None else banks
        x = self.embed(input_ids)
        x0 = x
        rope = self.rotary(input_ids.size(1), input_ids.device)
        skip_before = self.config.skip_placement == "before_block"
        skips: list[torch.Tensor] = []
        for block in self.blocks:
            i = block.layer_index
            # U-Net: decoder block E+j is joined by the output of encoder block E-1-j.
            joins = i >= self.num_encoder_layers and bool(skips)
            if joins and skip_before:
                x = x + self.skip_w[i - self.num_encoder_layers].to(x.dtype) * skips.pop()
            x = self.block_forward(block, x, x0, banks, rope)
            if i < self.num_encoder_layers:
                skips.append(x)
            elif joins and not skip_before:
                x = x + self.skip_w[i - self.num_encoder_layers].to(x.dtype) * skips.pop()
        return rms_norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Softcapped logits, returned as float32 (the softcap itself runs in the working
        dtype, bf16 under autocast, as the seed's does)."""
        return softcap(F.linear(hidden, self.tok_emb.weight.to(hidden.dtype)), self.config.logit_softcap).float()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] -> softcapped float logits [B, T, V]."""
        return self.logits(self.hidden_states(input_ids))

    def cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def build_model(config: dict) -> torch.nn.Module:
    """Factory named in checkpoints (`train.model:build_model`): config dict -> GPT."""
    return GPT(ModelConfig.from_dict(dict(config)))
