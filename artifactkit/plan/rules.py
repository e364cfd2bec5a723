"""The built-in classification rule table: tensor name -> category, first match wins.

This is data, not branches. Each row has a reason so `classify` can say why a tensor
landed where it did. Names are matched after bank expansion (`qo_bank` -> `b.N.a.q`,
...), which is why the seed's unbanked names are first-class rows here: matching only
`.attn.` / `.mlp.` once sent every seed matrix to the int8 fallback (39.7 MB instead
of ~16 MB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from artifactkit.errors import InputError

CATEGORIES = ("embed", "attn", "mlp", "control", "training_only", "other")

# Float tensors with more elements than this that land in `other` trip the guard.
SMALL_TENSOR_THRESHOLD = 65_536

LAYER = r"(?:^|\.)(?:blocks|layers|layer|h|b)\.\d+\."


@dataclass(frozen=True)
class Rule:
    pattern: str  # regular expression, searched in the full tensor name
    category: str
    reason: str

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern)
    return _CACHE[pattern]


BUILTIN_RULES: tuple[Rule, ...] = (
    # --- training-only: never shipped -------------------------------------------------
    Rule(r"(?:^|\.)(?:predictor|ctx_proj|tgt_proj)\.", "training_only", "JEPA predictor and latent projections"),
    Rule(r"(?:^|\.)(?:target_encoder|ema_model|tgt_enc)\.", "training_only", "JEPA / EMA target encoder copy"),
    # --- control: gains, scales, mixes, skip weights, gates, norms, biases --------------
    Rule(r"(?:^|\.)bigram\.scale$", "control", "BigramHash output scale"),
    Rule(r"(?:^|\.)smear\.gate$", "control", "SmearGate mixing gate"),
    Rule(r"(?:^|\.)(?:skip_w|skip_weights)$", "control", "U-Net skip weights"),
    Rule(LAYER + r"attn\.qg$", "control", "per-head query gain (seed)"),
    Rule(r"(?:^|\.)q_gain$", "control", "per-head query gain (public baseline)"),
    Rule(LAYER + r"(?:as_|ms|rm)$", "control", "seed block attn scale / mlp scale / residual mix"),
    Rule(r"(?:^|\.)(?:attn_scale|mlp_scale|resid_mix)$", "control", "baseline block scales and residual mix"),
    Rule(r"(?:norm|ln_\w*|layernorm|LayerNorm|ln)(?:\.\w+)?\.(?:weight|bias|scale)$", "control", "normalisation gain / bias"),
    Rule(r"\.bias$", "control", "bias vector"),
    # --- embeddings (and the untied output head) ----------------------------------------
    Rule(r"(?:^|\.)tok_emb\.weight$", "embed", "token embedding (tied output head)"),
    Rule(r"(?:^|\.)bigram\.emb\.weight$", "embed", "BigramHash embedding table"),
    Rule(r"(?:^|\.)bigram\.proj\.weight$", "embed", "BigramHash projection into the model width"),
    Rule(r"(?:^|\.)(?:lm_head|output|embed_out)\.weight$", "embed", "output head (vocabulary x width)"),
    Rule(r"(?:^|\.)(?:embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings)\.weight$",
         "embed", "Hugging Face / GPT-2 embedding table"),
    # --- attention -----------------------------------------------------------------------
    Rule(LAYER + r"a\.[qkvo]$", "attn", "seed unbanked attention (expanded qo_bank / kv_bank)"),
    Rule(r"\.attn\.(?:c_q|c_k|c_v|c_attn|proj|c_proj|q_proj|k_proj|v_proj|o_proj|out_proj)\.weight$", "attn",
         "attention projection (baseline / GPT-2 names)"),
    Rule(r"\.self_attn\.(?:q_proj|k_proj|v_proj|o_proj|out_proj|qkv_proj)\.weight$", "attn",
         "Hugging Face self-attention projection"),
    Rule(r"\.attention\.self\.(?:query|key|value)\.weight$", "attn", "BERT self-attention projection"),
    Rule(r"\.attention\.output\.dense\.weight$", "attn", "BERT attention output projection"),
    Rule(r"\.(?:attention|attn)\.(?:wq|wk|wv|wo|query_key_value|dense)\.weight$", "attn",
         "attention projection (Llama / NeoX names)"),
    # --- MLP -----------------------------------------------------------------------------
    Rule(LAYER + r"m\.[ud]$", "mlp", "seed unbanked MLP (expanded mlp_up_bank / mlp_down_bank)"),
    Rule(r"\.mlp\.(?:fc|proj|c_fc|c_proj|gate_proj|up_proj|down_proj|fc1|fc2|dense_h_to_4h|dense_4h_to_h)\.weight$",
         "mlp", "MLP projection (baseline / GPT-2 / Hugging Face names)"),
    Rule(r"\.intermediate\.dense\.weight$", "mlp", "BERT MLP up projection"),
    Rule(LAYER + r"output\.dense\.weight$", "mlp", "BERT MLP down projection"),
    Rule(r"\.feed_forward\.(?:w1|w2|w3)\.weight$", "mlp", "Llama feed-forward projection"),
    Rule(r"(?:^|\.)pooler\.dense\.weight$", "mlp", "BERT pooler dense layer (a linear map, quantized like MLP)"),
)


def validate_category(category: str, where: str) -> str:
    if category not in CATEGORIES:
        raise InputError(f"{where}: unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    return category


def match_builtin(name: str) -> Rule | None:
    for rule in BUILTIN_RULES:
        if rule.compiled().search(name):
            return rule
    return None
