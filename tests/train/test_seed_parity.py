"""The default model and JEPA objective against the seed's own code.

The seed's `train_gpt.py` (../shared/seed) is parsed with `ast`; only its imports and
the model / VICReg definitions are executed, in a namespace of their own, so its
training `main()` (CUDA, torchrun, data paths) never runs and nothing is imported from
../shared. Identical weights are copied both ways (ours -> seed, seed -> ours) and the
logits compared on the CPU in float32, at seq_len 128 and 2048 (past the seed's RoPE
threshold of 1024, where its long-context frequencies take over).
"""

from __future__ import annotations

import ast
import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import SHARED, require_shared
from train.jepa import JepaObjective
from train.model import GPT, ModelConfig

SEED_SCRIPT = SHARED / "seed" / "train_gpt.py"
SEED_DEFINITIONS = {"CTRL_PATS", "RMSNorm", "CastedLinear", "BigramHash", "Rotary", "rope", "SmearGate", "Attn",
                    "Block", "JEPA_LM", "vicreg_loss"}
JEPA_ONLY = {"predictor.0.weight", "predictor.2.weight", "ctx_proj.weight", "tgt_proj.weight"}
# The seed's Args field -> ours, for the architecture (the seed's Args default NUM_LAYERS
# is 20; its 11-layer A/B runs set NUM_LAYERS=11, which is our default).
ARGS_TO_CONFIG = {"vocab_size": "vocab_size", "model_dim": "model_dim", "num_heads": "num_heads",
                  "num_kv_heads": "num_kv_heads", "mlp_mult": "mlp_mult", "logit_softcap": "logit_softcap",
                  "rope_base": "rope_base", "rope_dims": "rope_dims", "qk_gain_init": "qk_gain_init",
                  "bigram_vocab_size": "bigram_vocab", "bigram_dim": "bigram_dim", "xsa_last_n": "xsa_last_n",
                  "tied_embed_init_std": "embed_init_std"}


def _seed_tree() -> ast.Module:
    require_shared()
    return ast.parse(SEED_SCRIPT.read_text(encoding="utf-8"), filename=str(SEED_SCRIPT))


def seed_namespace() -> dict:
    """Execute the seed's model definitions (and nothing else) in a fresh namespace."""
    kept = []
    for node in _seed_tree().body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            kept.append(node)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in SEED_DEFINITIONS:
            kept.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in SEED_DEFINITIONS for t in node.targets):
            kept.append(node)
    found = {getattr(node, "name", None) or node.targets[0].id for node in kept if not isinstance(node, ast.ImportFrom)}
    assert found == SEED_DEFINITIONS, f"the seed script no longer defines {SEED_DEFINITIONS - found}"
    namespace = {
        "__name__": "seed_train_gpt", "math": math, "torch": torch, "nn": nn, "F": F, "Tensor": torch.Tensor,
        # Stub for a CUDA-only import: the seed tries flash-attn and, when it is missing
        # (as on any CPU), sets `_fa = None` and attends with SDPA. That fallback is the
        # seed's own code path; we only skip the failing import.
        "_fa": None, "_ATTN": "sdpa",
    }
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(SEED_SCRIPT), "exec"), namespace)  # noqa: S102
    return namespace


def seed_args_defaults() -> dict[str, object]:
    """The default values written in the seed script's `Args` class, parsed from its source
    (each is the second argument of the call there; nothing is read at run time)."""
    args = next(node for node in _seed_tree().body if isinstance(node, ast.ClassDef) and node.name == "Args")
    defaults = {}
    for node in args.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args):
            continue
        inner = node.value.args[0]
        if isinstance(inner, ast.Call) and len(inner.args) == 2 and isinstance(inner.args[1], ast.Constant):
            defaults[node.targets[0].id] = inner.args[1].value
    return defaults


def seed_model(namespace: dict, config: ModelConfig) -> nn.Module:
    return namespace["JEPA_LM"](
        vocab_size=config.vocab_size, num_layers=config.num_layers, model_dim=config.model_dim,
        num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, mlp_mult=float(config.mlp_mult),
        logit_softcap=config.logit_softcap, rope_base=config.rope_base, rope_dims=config.rope_dims,
        qk_gain_init=config.qk_gain_init, d_latent=256, bigram_vocab_size=config.bigram_vocab,
        bigram_dim=config.bigram_dim, xsa_last_n=config.xsa_last_n, ln_scale=True,
        tied_embed_init_std=config.embed_init_std,
    )


@torch.no_grad()
def randomise(module: nn.Module, seed: int) -> None:
    """Every parameter away from its init (zero output projections, zero BigramHash, unit
    gains would hide differences), at scales that keep the logits in softcap's range."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if parameter.ndim == 3:  # banks
            parameter.copy_(noise * parameter.shape[-1] ** -0.5)
        elif name == "tok_emb.weight":
            parameter.copy_(noise * 0.4)
        elif parameter.ndim <= 1 or name.endswith(("rm", "skip_w")):
            parameter.copy_(parameter.detach() + 0.3 * noise)
        else:
            parameter.copy_(noise * parameter.shape[-1] ** -0.5)


@pytest.fixture(autouse=True)
def no_orthogonal_init(monkeypatch):
    """Every weight is overwritten (`randomise`, then a copy), so skip the QR-based
    orthogonal init that makes building an 11 x 512 model take seconds."""
    monkeypatch.setattr(nn.init, "orthogonal_", lambda tensor, *args, **kwargs: tensor)


def test_default_config_is_the_seeds_architecture():
    defaults = seed_args_defaults()
    ours = ModelConfig()
    for seed_name, our_name in ARGS_TO_CONFIG.items():
        assert getattr(ours, our_name) == defaults[seed_name], (seed_name, our_name)
    assert defaults["num_layers"] == 20 and ours.num_layers == 11  # the seed's A/B sets NUM_LAYERS=11
    assert {f.name for f in fields(ModelConfig)} >= set(ARGS_TO_CONFIG.values())


@pytest.mark.parametrize("direction", ["ours_to_seed", "seed_to_ours"])
def test_default_model_gives_the_seeds_logits_at_128_and_2048(direction):
    namespace = seed_namespace()
    config = ModelConfig()
    torch.manual_seed(0)
    ours, seed = GPT(config).eval(), seed_model(namespace, config).eval()
    if direction == "ours_to_seed":
        randomise(ours, 1)
        missing, unexpected = seed.load_state_dict(ours.state_dict(), strict=False)
        assert set(missing) == JEPA_ONLY and not unexpected
    else:
        randomise(seed, 2)
        ours.load_state_dict(seed.context_encoder_state(), strict=True)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for batch, seq_len in ((2, 128), (1, 2048)):
            ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)
            expected = seed.forward_logits(ids)
            got = ours(ids)
            assert expected.abs().max() > 3.0  # non-trivial logits
            difference = (got - expected).abs().max().item()
            print(f"{direction} seq_len {seq_len}: max |logit difference| {difference:.2e}")
            assert difference < 2e-4, (seq_len, difference)


def test_jepa_objective_gives_the_seeds_losses_and_gradients():
    namespace = seed_namespace()
    # the seed's width and latent (512 -> 256); 3 layers keep a skip and XSA but save time
    config = ModelConfig(num_layers=3, xsa_last_n=1)
    torch.manual_seed(0)
    seed = seed_model(namespace, config)
    randomise(seed, 4)
    model = GPT(config)
    model.load_state_dict(seed.context_encoder_state(), strict=True)
    jepa = JepaObjective(model, latent_dim=256)
    jepa.load_state_dict({name: tensor for name, tensor in seed.state_dict().items() if name in JEPA_ONLY},
                         strict=False)
    generator = torch.Generator().manual_seed(5)
    target_banks = {short: getattr(seed, name).detach() + 0.01 * torch.randn(getattr(seed, name).shape,
                                                                             generator=generator)
                    for short, name in (("qo", "qo_bank"), ("kv", "kv_bank"), ("up", "mlp_up_bank"),
                                        ("dn", "mlp_down_bank"))}
    for short, name in (("qo", "qo_bank"), ("kv", "kv_bank"), ("up", "mlp_up_bank"), ("dn", "mlp_down_bank")):
        getattr(jepa, f"target_{name}").copy_(target_banks[short])
    ids = torch.randint(0, config.vocab_size, (2, 129), generator=generator)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    ce_seed, jepa_seed, vicreg_seed, stats = seed.forward_jepa(inputs, targets, target_banks)
    (ce_seed + 0.3 * jepa_seed + 1.0 * vicreg_seed).backward()
    hidden = model.hidden_states(inputs)
    ce = model.cross_entropy(hidden, targets)
    parts = jepa(model, inputs, hidden)
    (ce + 0.3 * parts["jepa_loss"] + 1.0 * parts["vicreg_loss"]).backward()

    for ours_value, seed_value in ((ce, ce_seed), (parts["jepa_loss"], jepa_seed),
                                   (parts["vicreg_loss"], vicreg_seed)):
        assert torch.allclose(ours_value, seed_value, rtol=1e-4, atol=1e-6), (ours_value, seed_value)
    assert abs(parts["z_std_mean"].item() - stats["z_std_mean"]) < 1e-5
    assert abs(parts["z_std_min"].item() - stats["z_std_min"]) < 1e-5
    pairs = [(jepa.predictor[0].weight, seed.predictor[0].weight), (jepa.ctx_proj.weight, seed.ctx_proj.weight),
             (jepa.tgt_proj.weight, seed.tgt_proj.weight), (model.qo_bank, seed.qo_bank),
             (model.tok_emb.weight, seed.tok_emb.weight), (model.skip_w, seed.skip_w)]
    for ours_parameter, seed_parameter in pairs:
        scale = seed_parameter.grad.abs().max()
        assert scale > 0
        assert (ours_parameter.grad - seed_parameter.grad).abs().max() <= 1e-3 * scale


# The seed's Args (and the environment of its A/B command) -> our TrainConfig field.
ARGS_TO_TRAIN = {"seed": "seed", "iterations": "iterations", "max_wallclock_seconds": "max_wall_s",
                 "lr_warmup_steps": "warmup_steps", "warmdown_iters": "warmdown_steps",
                 "train_batch_tokens": "batch_tokens", "train_seq_len": "seq_len", "val_loss_every": "val_every",
                 "tied_embed_lr": "embed_lr", "matrix_lr": "matrix_lr", "scalar_lr": "scalar_lr",
                 "muon_momentum": "muon_momentum", "muon_backend_steps": "muon_ns_steps",
                 "muon_momentum_warmup_start": "muon_momentum_start",
                 "muon_momentum_warmup_steps": "muon_momentum_warmup_steps", "beta1": "adam_beta1",
                 "beta2": "adam_beta2", "adam_eps": "adam_eps", "grad_clip_norm": "grad_clip",
                 "muon_wd": "muon_weight_decay", "adam_wd": "adam_weight_decay", "d_latent": "jepa_latent_dim",
                 "jepa_weight": "jepa_weight", "target_ema_decay": "jepa_ema_decay",
                 "vicreg_var_weight": "vicreg_weight", "num_layers": None}


def seed_ab_environment() -> dict[str, str]:
    """KEY=VALUE settings of the JEPA command in the seed README's Reproduction section."""
    require_shared()
    readme = (SHARED / "seed" / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Reproduction", 1)[1].split("```bash", 1)[1].split("torchrun", 1)[0]
    return dict(token.split("=", 1) for token in block.split() if "=" in token)


@pytest.mark.parametrize("preset, layers", [("seed11", 11), ("seed20", 20)])
def test_seed_presets_are_the_seeds_ab_run(preset, layers):
    from train.config import preset_config

    defaults = seed_args_defaults()
    environment = seed_ab_environment()
    assert environment["NUM_LAYERS"] == "11" and environment["WARMDOWN_ITERS"] == "1000"
    config = preset_config(preset)
    for seed_name, ours in ARGS_TO_TRAIN.items():
        value = environment.get(seed_name.upper(), defaults[seed_name])
        value = type(defaults[seed_name])(value)
        if ours is None:
            continue
        assert getattr(config, ours) == value, (seed_name, ours, getattr(config, ours), value)
    assert config.model.num_layers == layers
    assert config.scalar_weight_decay == defaults["adam_wd"]  # the seed's scalar AdamW decays too
    assert config.jepa_lr == defaults["scalar_lr"]  # its JEPA heads sit in the scalar group
    assert config.grad_accum_steps == 0  # 8 // world_size, as the seed
    # hard-coded in the seed's main(): weight EMA min(0.9995, 1 - 10/(k+10)), applied from 1,000 steps
    assert (config.weight_ema_decay, config.weight_ema_min_steps) == (0.9995, 1000)
    assert config.bf16_master_weights and not config.grad_clip_global and not config.compile
    assert config.swa_every == 0  # the seed collects SWA snapshots but never applies them
    assert config.val_tokens == 0  # the whole validation set
    model = config.model
    assert (model.skip_placement, model.rope_fix_long_context, model.bigram_fix_init) == \
        ("after_block", False, False)
