"""Training configuration: one typed dataclass (every field has help text), the
presets, and the merge order preset < TOML file < command line.

A TOML file holds `TrainConfig` fields at the top level and `ModelConfig` fields in
a `[model]` table, e.g.::

    preset = "seed11"
    iterations = 20000
    jepa_weight = 0.3
    [model]
    num_layers = 11
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from train.model import ModelConfig


def _help(text: str, default: object) -> object:
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything a training run needs besides the architecture (`model`)."""

    preset: str = _help("Preset the other defaults came from (tiny, mid, seed11, seed20).", "tiny")
    out: str = _help("Run directory: ckpt.pt, log.jsonl, run.json, train_state.pt.", "runs/train")
    data: str | None = _help("Directory with FineWeb-format shards (train_*.bin / val_*.bin, or the "
                             "fineweb_train_*/fineweb_val_* names). Omitted: the embedded corpus is prepared "
                             "into OUT.", None)
    train_glob: str | None = _help("Glob of training shards (overrides the one derived from --data).", None)
    val_glob: str | None = _help("Glob of validation shards (overrides the one derived from --data).", None)
    tokenizer: str | None = _help("SentencePiece .model of the shards (required with --data).", None)
    seed: int = _help("Random seed for the initialisation (the seed's Args default; its A/B runs used 42).", 1337)
    iterations: int = _help("Number of optimizer steps. The seed's A/B set 200,000 and let its wall-clock cap end "
                            "the run.", 200_000)
    max_wall_s: float = _help("Stop after this many seconds of training, validation excluded (0 = no cap); the "
                              "warm-down then follows the clock.", 1800.0)
    seq_len: int = _help("Tokens per training sequence.", 2048)
    batch_tokens: int = _help("Tokens per optimizer step over all ranks and accumulation steps.", 786_432)
    grad_accum_steps: int = _help("Micro-batches accumulated per optimizer step (per rank); 0 = 8 / world_size "
                                  "(at least 1), so one GPU and eight GPUs take the same optimizer steps.", 0)
    warmup_steps: int = _help("Linear LR warm-up: the multiplier is step / warmup_steps (0 on the first step, "
                              "as in the seed).", 200)
    warmdown_steps: int = _help("The seed's cosine warm-down: over the last N of `iterations`, or, with "
                                "max_wall_s, over the last N steps' worth of time at the average step time "
                                "(iterations then play no part). 0 = use warmdown_frac.", 1000)
    warmdown_frac: float = _help("With warmdown_steps 0: the cosine warm-down spans this fraction of the run, "
                                 "by steps or by the clock, whichever is further along.", 0.0)
    min_lr_frac: float = _help("LR multiplier reached at the end of the warm-down.", 0.0)
    matrix_lr: float = _help("Muon learning rate for the weight banks.", 0.025)
    embed_lr: float = _help("AdamW learning rate for the tied token embedding and the bigram table.", 0.035)
    scalar_lr: float = _help("AdamW learning rate for gains, scales, mixes, gates and the bigram projection.",
                             0.025)
    jepa_lr: float = _help("AdamW learning rate for the JEPA predictor and projections (the seed trains them "
                           "with its scalar group, 0.025).", 0.025)
    adam_beta1: float = _help("AdamW beta1.", 0.9)
    adam_beta2: float = _help("AdamW beta2.", 0.95)
    adam_eps: float = _help("AdamW epsilon.", 1e-8)
    adam_weight_decay: float = _help("Decoupled weight decay of the embeddings (AdamW).", 0.04)
    scalar_weight_decay: float = _help("Decoupled weight decay of the control scalars, the bigram projection and "
                                       "the JEPA heads (AdamW; the seed decays them like the embeddings).", 0.04)
    muon_momentum_start: float = _help("Muon momentum at step 0 (warms up to muon_momentum).", 0.92)
    muon_momentum: float = _help("Muon momentum after the warm-up.", 0.99)
    muon_momentum_warmup_steps: int = _help("Steps over which Muon momentum warms up.", 1500)
    muon_ns_steps: int = _help("Newton-Schulz iterations per Muon update.", 5)
    muon_weight_decay: float = _help("Decoupled weight decay of the Muon banks.", 0.04)
    grad_clip: float = _help("Clip the gradient norm to this (0 = off); see grad_clip_global for which gradient.",
                             0.3)
    grad_clip_global: bool = _help("Departure: clip the gradient averaged over ranks. Off (the seed): each rank "
                                   "clips its own gradient before the all-reduce.", False)
    weight_ema_decay: float = _help("EMA of the weights (0 = off); the decay warms up as k / (k + 10) after k "
                                    "steps, as in the seed.", 0.9995)
    weight_ema_min_steps: int = _help("Apply the weight EMA at the end only when the run took at least this many "
                                      "steps (the seed: 1,000; shorter runs keep their raw weights).", 1000)
    swa_every: int = _help("Departure: collect an SWA snapshot every N steps during the warm-down and use their "
                           "average as the final weights (0 = off; the seed collects SWA but never applies it).", 0)
    bf16_master_weights: bool = _help("The seed's dtypes: all parameters rounded through bf16 at init; tok_emb, "
                                      "bigram.emb, blocks.*.rm, skip_w and the JEPA heads trained in bf16; Muon's "
                                      "momentum and the banks' all-reduce in bf16. Implies bf16 autocast (CPU too).",
                                      True)
    jepa_weight: float = _help("Weight of the JEPA (MSE) loss (0 = vanilla cross-entropy; the target encoder is "
                               "then never built). Multiplied by the LR multiplier, as in the seed: it ramps up "
                               "over the LR warm-up and anneals to 0 with the warm-down.", 0.3)
    jepa_latent_dim: int = _help("Width of the JEPA latent (ctx_proj / tgt_proj outputs).", 256)
    jepa_ema_decay: float = _help("EMA decay of the JEPA target encoder's banks.", 0.9995)
    vicreg_weight: float = _help("Weight of the VICReg loss in the total (JEPA runs only). Constant: the seed "
                                 "neither ramps nor anneals it.", 1.0)
    vicreg_var_weight: float = _help("VICReg variance-term weight inside the VICReg loss (on z_tgt).", 1.0)
    vicreg_cov_weight: float = _help("VICReg covariance-term weight inside the VICReg loss (on z_tgt).", 0.04)
    val_every: int = _help("Validate every N steps and after the last step, before weight averaging (0 = only "
                           "the final validation of the averaged weights).", 500)
    val_tokens: int = _help("Validate on at most this many tokens (0 = the whole validation set).", 0)
    log_every: int = _help("Write a log row every N steps.", 100)
    save_every: int = _help("Save the resumable training state every N steps (0 = only at the end).", 1000)
    device: str = _help("cpu, cuda, or auto (cuda when available).", "auto")
    cpu_threads: int = _help("Intra-op CPU threads for this run (0 = torch's default). 1 avoids OpenMP's "
                             "collapse when other processes share the cores.", 0)
    compile: bool = _help("Departure: torch.compile the training step. Off (the seed): its 11-layer A/B trained "
                          "eagerly (both arms), so step times and the steps that fit the cap are eager ones.",
                          False)
    resume: bool = _help("Resume from OUT/train_state.pt if present.", False)
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Architecture."})

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.seq_len <= 0 or self.batch_tokens <= 0 or self.grad_accum_steps < 0:
            raise ValueError("seq_len and batch_tokens must be positive and grad_accum_steps >= 0")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")


def _tiny_model() -> ModelConfig:
    return ModelConfig(num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2, xsa_last_n=2)


def _mid_model() -> ModelConfig:
    """4 x 384, 6 query / 3 key-value heads of 64: every attention and MLP matrix is above
    artifactkit's 65,536-element small-tensor threshold (q/o 147,456, k/v 73,728, MLP
    442,368 elements), so the default policy really int6-quantizes them."""
    return ModelConfig(num_layers=4, model_dim=384, num_heads=6, num_kv_heads=3, xsa_last_n=2)


# TrainConfig's defaults are the seed's 11-layer run. The CPU presets change its scale
# (model, sequence, batch, steps and the schedule lengths that go with them) and what a
# CPU cannot do (bf16 master weights need autocast, which CPUs run slowly; no 1,800 s
# cap), never its mechanisms; train/README.md lists every value they change.
_CPU = {"max_wall_s": 0.0, "grad_accum_steps": 1, "bf16_master_weights": False, "warmdown_steps": 0,
        "weight_ema_min_steps": 0, "val_every": 0, "log_every": 1}

PRESETS: dict[str, dict] = {
    # CPU, minutes: the tests.
    "tiny": {**_CPU, "model": _tiny_model(), "iterations": 200, "seq_len": 128, "batch_tokens": 2048,
             "warmup_steps": 5, "warmdown_frac": 0.3, "matrix_lr": 0.04, "embed_lr": 0.05, "scalar_lr": 0.04,
             "grad_clip": 1.0, "weight_ema_decay": 0.997, "muon_momentum_warmup_steps": 20,
             "val_tokens": 16384, "save_every": 50},
    # CPU, <= 15 minutes with --cpu-threads 1: a model artifactkit really quantizes; the demo's model.
    # 150 steps of 4,096 tokens: ~3.4 s (vanilla) / ~4.4 s (JEPA) of one core per step, so
    # ~10 / ~12 minutes on an idle core; max_wall_s guards the 15 minutes on a busy one
    # (pass --max-wall-s 0 for a step-exact run). Warm-up 20: at 10 the JEPA head diverged.
    # Embedding LR 0.01: at the seed's 0.035 the loss climbs back above ln(1024) by step
    # 15 at these batch sizes (train/README.md has the measurement).
    "mid": {**_CPU, "model": _mid_model(), "iterations": 150, "max_wall_s": 780.0, "seq_len": 256,
            "batch_tokens": 4096, "warmup_steps": 20, "warmdown_frac": 0.3, "muon_momentum_warmup_steps": 40,
            "embed_lr": 0.01, "val_every": 25, "log_every": 5, "save_every": 25},
    # The seed's A/B runs (8 GPUs, FineWeb sp1024, 1,800 s): TrainConfig's defaults.
    "seed11": {"model": ModelConfig(num_layers=11), "seed": 42, "device": "cuda"},
    "seed20": {"model": ModelConfig(num_layers=20), "seed": 42, "device": "cuda"},
}


class ConfigError(ValueError):
    """A config file or option is invalid; the message names it, the cause and the fix."""


def preset_config(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"--preset {name}: unknown preset; choose one of {sorted(PRESETS)}")
    return TrainConfig(preset=name, **PRESETS[name])


def _check_keys(source: str, given: dict, known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown}; see `python -m train --help` for the fields")


def apply_overrides(config: TrainConfig, overrides: dict, source: str = "overrides") -> TrainConfig:
    """`config` with `overrides` applied (TrainConfig fields, plus a nested `model` dict)."""
    overrides = dict(overrides)
    model_overrides = overrides.pop("model", None) or {}
    overrides.pop("preset", None)
    train_fields = {f.name for f in fields(TrainConfig)} - {"model"}
    _check_keys(source, overrides, train_fields)
    _check_keys(f"{source} [model]", model_overrides, {f.name for f in fields(ModelConfig)})
    try:
        model = replace(config.model, **model_overrides)
        return replace(config, model=model, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}; fix the value") from exc


def load_toml(path: str | Path) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ConfigError(f"{path}: reading TOML needs Python >= 3.11 or the tomli package; "
                              "pip install tomli") from exc
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax") from exc


def resolve_config(preset: str | None, toml_path: str | None, cli_overrides: dict) -> TrainConfig:
    """preset defaults < TOML file < command line."""
    file_values = load_toml(toml_path) if toml_path else {}
    name = preset or file_values.get("preset") or "tiny"
    config = preset_config(name)
    if file_values:
        config = apply_overrides(config, file_values, str(toml_path))
    return apply_overrides(config, cli_overrides, "command line")


def field_python_type(annotation: object) -> type:
    """int / float / str / bool for a resolved field annotation (Optional unwrapped)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation  # type: ignore[return-value]


def option_fields() -> list[tuple[str, str, type, str]]:
    """(section, field name, type, help) for every overridable field; section is
    "train" or "model". Drives the generated command-line options."""
    rows = []
    train_types = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in ("model", "preset"):
            continue
        rows.append(("train", f.name, field_python_type(train_types[f.name]), f.metadata.get("help", "")))
    model_types = typing.get_type_hints(ModelConfig)
    for f in fields(ModelConfig):
        if f.name == "config_version":  # a format marker, not a choice
            continue
        rows.append(("model", f.name, field_python_type(model_types[f.name]), f.metadata.get("help", "")))
    return rows
