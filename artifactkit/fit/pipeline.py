"""Fit a checkpoint to a byte budget: choose bits and clip per matrix so that the
measured damage is smallest while artifact + code bytes stay within the budget.

This module owns the `artifactkit fit` pipeline:

1. **Groups.** Every expanded matrix the base policy (int6-mixed) would store as
   integers is one group. Matrices are the natural unit: the damage proxy below is a
   per-matrix quantity (one Hessian per weight), bytes are measured per matrix, and the
   finest choice gives the solver the most room. Everything else (control fp32, small
   fp16, raw) is fixed. With calibration, integer matrices that no `F.linear` call used
   (embedding lookups only) have no Hessian: under `hessian-kl` they are searched with
   round-to-nearest and the squared weight error (put on the common scale by the KL
   step below); under plain `hessian` they stay at the policy's scheme.
2. **Candidates.** Each group is quantized under every (bits, clip) pair asked for:
   with GPTQ when calibration ran and `gptq=True`, else round-to-nearest.
3. **Bytes** of a candidate are measured, not computed: its codes and scales are
   encoded by the real artifact codec on their own (a one-tensor `QuantizedModel`),
   and the stored sizes of the codes and scales sections are taken. The gap between
   the sum of those and a real pack (header, fixed tensors, cross-tensor context of the
   compressor) is measured by packing for real and carried as `overhead`.
4. **Damage.** With calibration: tr(dW H dW^T), H = 2 X^T X / n from the layer's
   inputs on calibration tokens (output error of the layer). Output errors of
   different layers are not on one scale (residual gains, depth, the lookup side of a
   tied embedding), so by default (`hessian-kl`) each matrix's values are rescaled so
   that its fewest-byte candidate equals the KL(float || quantized) at the model output
   that this candidate alone causes on the calibration tokens: one forward pass per
   matrix. The Hessian ranks a matrix's own candidates; the KL puts matrices on one
   scale (estimated nats per token). Without a model (raw state dict, no `--model`):
   squared weight error ||dW||^2, and the result says so.
5. **Solver.** A multiple-choice knapsack (`solve_knapsack`): exact DP over bytes
   discretised into at most `DEFAULT_RESOLUTION` cells (costs rounded *up*, so the
   plan never exceeds the estimate), then `fill_greedy` spends the rounding slack
   one upgrade at a time (best damage saved per byte).
6. **Pack and verify.** The plan is packed for real; if it overshoots, the measured
   overshoot joins the overhead and the plan is re-solved (the smallest plan, checked
   first, is the fallback, so the budget is never exceeded). Then upgrades whose
   estimated step fits the real headroom are tried one by one with a real pack each;
   one that overshoots is rejected. At the end, headroom < the smallest step still
   untried (`smallest_step_bytes`).

Deterministic for a fixed seed: calibration tokens come from a seeded generator, GPTQ
and the codecs are deterministic, and every tie is broken by index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifactkit.budget import BudgetLine, count_code
from artifactkit.checkpoint import LoadedCheckpoint, load_checkpoint
from artifactkit.errors import CheckFailed, InputError
from artifactkit.format.akit import DEFAULT_CODEC, PackedArtifact, encode_artifact
from artifactkit.plan.banks import expand_banks, restore_banks
from artifactkit.plan.classify import Classification, UserRules, classify_state_dict
from artifactkit.plan.clip_rules import parse_clip_rule
from artifactkit.plan.policy import Policy, default_policy, int_scheme
from artifactkit.plan.schemes import MAX_BITS, MIN_BITS, dtype_name
from artifactkit.quantize.apply import QuantEntry, QuantizedModel, quantize_state_dict
from artifactkit.quantize.calibration import self_generated, tokens_from_shards
from artifactkit.quantize.gptq import collect_hessians, gptq_quantize, prepare_hessian
from artifactkit.quantize.intn import QuantizedTensor, quantize
from artifactkit.roundtrip.evaluate import default_seq_len
from artifactkit.roundtrip.model_factory import build_model
from eval.runtime import load_json_object, resolve_device

DEFAULT_RESOLUTION = 100_000  # DP cells: slack from rounding is at most groups x capacity / this
DEFAULT_BITS_CHOICES = (4, 5, 6, 7, 8)
DEFAULT_CLIP_CHOICES = ("percentile", "mse")
DEFAULT_CALIB_SEQS = 64
CALIB_BATCH = 8  # sequences per forward pass while collecting Hessians
MAX_SOLVE_ATTEMPTS = 8  # re-solves after a real pack overshoots the estimate
MAX_FIXUP_PACKS = 24  # real packs spent on filling the last headroom
SIZE_SECTIONS = ("codes", "scales")
DAMAGE_HESSIAN = "hessian"
DAMAGE_HESSIAN_KL = "hessian-kl"
DAMAGE_CHOICES = (DAMAGE_HESSIAN_KL, DAMAGE_HESSIAN)
DAMAGE_WEIGHT = "weight-mse"


# --------------------------------------------------------------------------- solver


def solve_knapsack(
    costs: list[list[int]], damages: list[list[float]], capacity: int, resolution: int = DEFAULT_RESOLUTION
) -> list[int] | None:
    """Pick one candidate per group minimising total damage with total cost <= capacity.

    Exact DP when the spare bytes above the cheapest plan fit in `resolution` cells;
    otherwise costs are rounded up to cells of `ceil(spare / resolution)` bytes, which
    keeps the answer feasible and within `groups` cells of optimal. Returns the chosen
    index per group, or None when even the cheapest plan exceeds `capacity`.
    Ties go to the lower index."""
    if len(costs) != len(damages) or any(len(c) != len(d) or not c for c, d in zip(costs, damages, strict=True)):
        raise InputError("knapsack: every group needs the same number (>= 1) of costs and damages")
    cheapest = [min(group) for group in costs]
    spare = capacity - sum(cheapest)
    if spare < 0:
        return None
    if not costs:
        return []
    unit = max(1, math.ceil(spare / max(1, resolution)))
    cells = spare // unit
    best = np.full(cells + 1, np.inf)
    best[0] = 0.0
    picks = np.zeros((len(costs), cells + 1), dtype=np.int32)
    for group, (group_costs, group_damages) in enumerate(zip(costs, damages, strict=True)):
        updated = np.full(cells + 1, np.inf)
        chosen = np.zeros(cells + 1, dtype=np.int32)
        for index, (cost, damage) in enumerate(zip(group_costs, group_damages, strict=True)):
            width = math.ceil((cost - cheapest[group]) / unit)
            if width > cells:
                continue
            trial = best[: cells + 1 - width] + float(damage)
            target = updated[width:]
            better = trial < target
            target[better] = trial[better]
            chosen[width:][better] = index
        best, picks[group] = updated, chosen
    cell = int(np.argmin(best))  # the first minimum: the fewest bytes among equal damage
    if not np.isfinite(best[cell]):
        return None
    plan = [0] * len(costs)
    for group in range(len(costs) - 1, -1, -1):
        index = int(picks[group, cell])
        plan[group] = index
        cell -= math.ceil((costs[group][index] - cheapest[group]) / unit)
    return plan


def _upgrades(costs: list[list[int]], damages: list[list[float]], plan: list[int],
              excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()):
    """(group, index, step bytes, damage saved) for every single change that lowers damage."""
    for group, (group_costs, group_damages) in enumerate(zip(costs, damages, strict=True)):
        current = plan[group]
        for index, (cost, damage) in enumerate(zip(group_costs, group_damages, strict=True)):
            saved = group_damages[current] - damage
            if saved > 0 and (group, index) not in excluded:
                yield group, index, cost - group_costs[current], saved


def best_upgrade(costs: list[list[int]], damages: list[list[float]], plan: list[int], room: int,
                 excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> tuple[int, int] | None:
    """The single change with the most damage saved per byte whose step fits `room`."""
    best: tuple[float, int, int] | None = None
    for group, index, step, saved in _upgrades(costs, damages, plan, excluded):
        if step > room:
            continue
        ratio = math.inf if step <= 0 else saved / step
        if best is None or ratio > best[0]:
            best = (ratio, group, index)
    return None if best is None else (best[1], best[2])


def fill_greedy(costs: list[list[int]], damages: list[list[float]], plan: list[int], capacity: int) -> list[int]:
    """Spend what `plan` leaves of `capacity` on upgrades, best damage-per-byte first."""
    plan = list(plan)
    used = sum(group[index] for group, index in zip(costs, plan, strict=True))
    while (move := best_upgrade(costs, damages, plan, capacity - used)) is not None:
        group, index = move
        used += costs[group][index] - costs[group][plan[group]]
        plan[group] = index
    return plan


def smallest_step(costs: list[list[int]], damages: list[list[float]], plan: list[int],
                  excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> int | None:
    """Fewest bytes any damage-lowering change (not in `excluded`) would add; None if none is left."""
    steps = [step for _, _, step, _ in _upgrades(costs, damages, plan, excluded)]
    return min(steps) if steps else None


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Candidate:
    bits: int
    clip: str
    method: str  # "gptq" | "rtn"
    bytes: int  # codes + scales as stored by the codec, measured on this tensor alone
    damage: float


@dataclass
class Group:
    """One integer-quantized matrix and its measured candidates."""

    name: str
    category: str
    shape: tuple[int, ...]
    candidates: list[Candidate] = field(default_factory=list)
    quantized: list[QuantizedTensor] = field(default_factory=list)


@dataclass
class FitOptions:
    budget: int
    code_files: list[str] = field(default_factory=list)
    code_rule: str = "raw"
    calib: str | None = None  # None: "self" when a model is available
    calib_seqs: int = DEFAULT_CALIB_SEQS
    seq_len: int | None = None
    model: str | None = None
    config: str | None = None  # JSON file of factory arguments, instead of the checkpoint's config
    bits_choices: tuple[int, ...] = DEFAULT_BITS_CHOICES
    clip_choices: tuple[str, ...] = DEFAULT_CLIP_CHOICES
    gptq: bool = True
    act_order: bool = True  # measured to help (reports/quant_gptq.md)
    search_clip: bool = True  # each row's clip chosen by GPTQ output error, not rounding error
    damage: str = DAMAGE_HESSIAN_KL  # with calibration; see DAMAGE_CHOICES
    codec: str = DEFAULT_CODEC
    seed: int = 0
    device: str = "cpu"
    user_rules: UserRules | None = None
    small_threshold: int | None = None  # None: the policy's (tensors at or below it stay fp16)
    resolution: int = DEFAULT_RESOLUTION
    progress: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None  # notices that cannot wait for the end (shown without --progress)


@dataclass
class FitResult:
    packed: PackedArtifact
    groups: list[Group]
    plan: list[int]
    line: BudgetLine
    damage_proxy: str
    calibration: dict[str, Any]
    estimated_model_bytes: int
    overhead_bytes: int
    smallest_step_bytes: int | None
    real_packs: int
    rejected_steps: int
    fixed: list[str]
    notices: list[str]

    @property
    def total_damage(self) -> float:
        return float(sum(group.candidates[index].damage for group, index in zip(self.groups, self.plan, strict=True)))

    def plan_rows(self) -> list[dict[str, Any]]:
        rows = []
        for group, index in zip(self.groups, self.plan, strict=True):
            candidate = group.candidates[index]
            rows.append({"name": group.name, "category": group.category, "shape": list(group.shape),
                         "bits": candidate.bits, "clip": candidate.clip, "method": candidate.method,
                         "estimated_bytes": candidate.bytes, "damage": candidate.damage})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "damage_proxy": self.damage_proxy,
            "calibration": self.calibration,
            "codec": self.packed.header["codec"],
            "artifact_bytes": self.packed.artifact_bytes,
            "budget": self.line.to_json(),
            "estimated_model_bytes": self.estimated_model_bytes,
            "overhead_bytes": self.overhead_bytes,
            "smallest_step_bytes": self.smallest_step_bytes,
            "real_packs": self.real_packs,
            "rejected_steps": self.rejected_steps,
            "total_damage": self.total_damage,
            "plan": self.plan_rows(),
            "fixed_at_policy": self.fixed,
            "notices": self.notices,
        }


# --------------------------------------------------------------------------- options


def parse_bits_choices(text: str) -> tuple[int, ...]:
    """`"4,5,6"` -> (4, 5, 6), sorted and unique."""
    values = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if not part.isdigit() or not MIN_BITS <= int(part) <= MAX_BITS:
            raise InputError(f"--bits-choices {text!r}: {part!r} is not a width in {MIN_BITS}..{MAX_BITS}; "
                             "pass a comma list such as 4,5,6,7,8")
        values.append(int(part))
    if not values:
        raise InputError(f"--bits-choices {text!r}: no bit width given; pass a comma list such as 4,5,6,7,8")
    return tuple(sorted(set(values)))


def parse_clip_choices(text: str) -> tuple[str, ...]:
    """`"percentile,std:12.5"` -> the canonical rule strings, in the order given, unique."""
    rules: list[str] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        try:
            rule = parse_clip_rule(part).to_string()
        except InputError as exc:
            raise InputError(f"--clip-choices {text!r}: {exc}") from None
        if rule not in rules:
            rules.append(rule)
    if not rules:
        raise InputError(f"--clip-choices {text!r}: no clip rule given; pass e.g. percentile,mse")
    return tuple(rules)


# --------------------------------------------------------------------------- calibration


def calibration_tokens(model: torch.nn.Module, options: FitOptions, seq_len: int,
                       device: torch.device) -> tuple[torch.Tensor, str]:
    source = options.calib or "self"
    if source == "self":
        tokens = self_generated(model, options.calib_seqs, seq_len, options.seed, device=device,
                                progress=options.progress, warn=options.warn)
        return tokens, "self-generated"
    return tokens_from_shards(source, options.calib_seqs, seq_len, options.seed), source


@dataclass
class Calibration:
    model: torch.nn.Module
    tokens: torch.Tensor  # [sequences, seq_len]
    hessians: dict[str, torch.Tensor]
    info: dict[str, Any]


def collect_calibration(checkpoint: LoadedCheckpoint, options: FitOptions, arch: str,
                        device: torch.device) -> Calibration:
    """Build the model, draw calibration tokens, and measure the Hessian of every F.linear weight."""
    config = load_json_object(options.config) if options.config else dict(checkpoint.config or {})
    # Like roundtrip-eval: the project's factory takes no seq_len, so it lives in the training config.
    seq_len = options.seq_len or default_seq_len(config, checkpoint.train_config)
    model = build_model(arch, config, checkpoint.state_dict, where=str(checkpoint.path)).to(device)
    if options.progress and options.calib in (None, "self"):
        options.progress(f"sampling {options.calib_seqs} calibration sequences of {seq_len} tokens from the model "
                         "(cost grows with seq_len squared; --calib TRAINING_SHARDS needs one forward pass)")
    tokens, source = calibration_tokens(model, options, seq_len, device)
    if options.progress:
        options.progress(f"collecting Hessians on {tokens.shape[0]} x {tokens.shape[1]} calibration tokens")
    batches = [tokens[start : start + CALIB_BATCH] for start in range(0, tokens.shape[0], CALIB_BATCH)]
    hessians = collect_hessians(model, batches, device)
    return Calibration(model, tokens, hessians, {"source": source, "sequences": int(tokens.shape[0]),
                                                 "seq_len": int(tokens.shape[1]), "arch": arch, "seed": options.seed})


def _log_probs(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    logits = model(batch.to(device=device, dtype=torch.long))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise InputError("model: the KL sensitivity needs model(ids) -> logits [B, T, V]; "
                         "use --damage hessian for models with another output")
    return torch.log_softmax(logits.float(), dim=-1)


def kl_sensitivities(calibration: Calibration, state_dict: Mapping[str, torch.Tensor], groups: list[Group],
                     reference: list[int], device: torch.device,
                     say: Callable[[str], None] = lambda _message: None) -> list[float]:
    """Per group: KL(float model || model with only this group at its `reference`
    candidate), in nats per calibration token. One forward pass over the calibration
    tokens per group; the float model's log-probabilities are computed once."""
    model = calibration.model
    batches = [calibration.tokens[start : start + CALIB_BATCH]
               for start in range(0, calibration.tokens.shape[0], CALIB_BATCH)]
    expanded, records = expand_banks(state_dict)
    was_training = model.training
    model.eval()
    result = []
    try:
        with torch.no_grad():
            reference_log_probs = [_log_probs(model, batch, device).cpu() for batch in batches]
            for number, (group, index) in enumerate(zip(groups, reference, strict=True), 1):
                say(f"KL sensitivity of {group.name} ({number}/{len(groups)})")
                trial = dict(expanded)
                original = expanded[group.name]
                trial[group.name] = group.quantized[index].dequantize(original.dtype)
                model.load_state_dict(restore_banks(trial, records), strict=True)
                total, count = 0.0, 0
                for batch, float_log_probs in zip(batches, reference_log_probs, strict=True):
                    quantized_log_probs = _log_probs(model, batch, device).cpu()
                    kl = (float_log_probs.exp() * (float_log_probs - quantized_log_probs)).sum(dim=-1)
                    total += float(kl.double().sum())
                    count += kl.numel()
                result.append(max(total / max(count, 1), 0.0))
    finally:
        model.load_state_dict(dict(state_dict), strict=True)
        model.train(was_training)
    return result


# --------------------------------------------------------------------------- measurement


def _damage(weight: torch.Tensor, restored: torch.Tensor, hessian: torch.Tensor | None) -> float:
    rows = weight.shape[0]
    delta = (weight.detach().double() - restored.double()).reshape(rows, -1)
    if hessian is None:
        return float(delta.pow(2).sum())
    return float(((delta @ hessian.double()) * delta).sum())


def _stored_bytes(entry: QuantEntry, policy: Policy, classification: Classification, codec: str) -> int:
    alone = QuantizedModel([entry], [], [], policy, classification, {})
    sections = encode_artifact(alone, codec).header["sections"]
    return int(sum(s["stored_bytes"] for s in sections if s["name"] in SIZE_SECTIONS))


def measure_group(name: str, category: str, tensor: torch.Tensor, hessian: torch.Tensor | None,
                  options: FitOptions, policy: Policy, classification: Classification,
                  device: torch.device) -> Group:
    """Quantize one matrix under every (bits, clip) candidate; measure bytes and damage."""
    group = Group(name, category, tuple(tensor.shape))
    use_gptq = options.gptq and hessian is not None and tensor.ndim == 2
    # Factor the Hessian once for all (bits, clip) candidates of this matrix.
    prepared = (prepare_hessian(hessian, act_order=options.act_order, device=device, name=name)
                if use_gptq and tensor.numel() else None)
    for bits in options.bits_choices:
        for clip in options.clip_choices:
            if use_gptq:
                codes, scales = gptq_quantize(tensor, prepared if prepared is not None else hessian, bits,
                                              parse_clip_rule(clip), device=device, name=name,
                                              act_order=options.act_order, search_clip=options.search_clip)
                quantized = QuantizedTensor(codes.cpu(), scales.cpu(), bits, tuple(tensor.shape))
            else:
                quantized = quantize(tensor, bits, clip)
            entry = QuantEntry(name, category, int_scheme(bits, clip), "fit candidate", tuple(tensor.shape),
                               dtype_name(tensor.dtype), quantized=quantized)
            group.candidates.append(Candidate(bits, clip, "gptq" if use_gptq else "rtn",
                                              _stored_bytes(entry, policy, classification, options.codec),
                                              _damage(tensor, quantized.dequantize(), hessian)))
            group.quantized.append(quantized)
    return group


# --------------------------------------------------------------------------- packing


def pack_plan(state_dict: Mapping[str, torch.Tensor], policy: Policy, groups: list[Group], plan: list[int],
              codec: str, user_rules: UserRules | None, meta: Mapping[str, Any]) -> PackedArtifact:
    """Pack the state dict with each group's chosen codes; every other tensor per `policy`."""
    overrides = [(f"^{re.escape(group.name)}$", group.candidates[index].bits)
                 for group, index in zip(groups, plan, strict=True)]
    fit_policy = policy.with_bits_for(overrides)
    chosen = {group.name: (group.candidates[index], group.quantized[index])
              for group, index in zip(groups, plan, strict=True)}
    precomputed = {name: (quantized.codes, quantized.scales) for name, (_, quantized) in chosen.items()}
    model = quantize_state_dict(state_dict, fit_policy, user_rules, meta, precomputed)
    for entry in model.entries:
        if entry.name in chosen:
            candidate = chosen[entry.name][0]
            # The policy's bits_for labels the clip with the width's default; record the real one.
            entry.scheme = int_scheme(candidate.bits, candidate.clip)
            entry.reason = f"fit: int{candidate.bits}, clip {candidate.clip}, {candidate.method}"
    return encode_artifact(model, codec)


# --------------------------------------------------------------------------- pipeline


def fit_checkpoint(checkpoint_path: str | Path, options: FitOptions) -> FitResult:
    """The whole `fit` pipeline (see the module docstring). Raises CheckFailed when even
    the smallest plan does not fit the budget."""
    say = options.progress or (lambda _message: None)
    checkpoint = load_checkpoint(checkpoint_path)
    notices = list(checkpoint.notices)
    code = count_code(list(options.code_files))
    code_bytes = code.bytes_for(options.code_rule)
    device = resolve_device(options.device)
    policy = default_policy()
    if options.small_threshold is not None:
        policy = replace(policy, small_threshold=int(options.small_threshold))

    arch = options.model or checkpoint.arch
    if options.config and not arch:
        raise InputError(f"{checkpoint_path}: --config {options.config} gives a model factory its arguments, but "
                         "this checkpoint names no factory; pass --model module:function as well")
    hessians: dict[str, torch.Tensor] | None = None
    calibration_run: Calibration | None = None
    calibration: dict[str, Any] = {}
    if arch:
        calibration_run = collect_calibration(checkpoint, options, arch, device)
        hessians, calibration = calibration_run.hessians, calibration_run.info
        damage_proxy = options.damage
    else:
        if options.calib not in (None, "self"):
            raise InputError(f"{checkpoint_path}: --calib {options.calib} needs a model to run the tokens through, "
                             "and this checkpoint names no factory; pass --model module:function")
        damage_proxy = DAMAGE_WEIGHT
        notices.append(f"notice: {checkpoint_path}: no model factory reference and no --model, so no calibration; "
                       "damage is the squared weight error (weight-MSE proxy), not the output error")

    expanded, _ = expand_banks(checkpoint.state_dict)
    classification = classify_state_dict(expanded, options.user_rules, policy.small_threshold)
    guard = classification.guard_message()
    if guard:
        notices.append(f"warning: {checkpoint_path}: {guard}")
    groups: list[Group] = []
    fixed: list[str] = []
    searchable = []
    for info in classification.tensors:
        tensor = expanded[info.name].detach().cpu()
        scheme, _ = policy.scheme_for(info.name, info.category, tensor)
        if not scheme.is_int:
            continue
        if hessians is not None and info.name not in hessians and damage_proxy != DAMAGE_HESSIAN_KL:
            fixed.append(info.name)
            continue
        searchable.append((info, tensor))
    lookups = [info.name for info, _ in searchable if hessians is not None and info.name not in hessians]
    if lookups:
        notices.append(f"notice: {len(lookups)} integer tensor(s) had no Hessian (not used by F.linear in the "
                       f"forward pass): round-to-nearest, squared weight error rescaled by their output KL: "
                       f"{', '.join(lookups)}")
    if fixed:
        notices.append(f"notice: {len(fixed)} integer tensor(s) had no Hessian (not used by F.linear in the "
                       f"forward pass) and keep the policy's scheme: {', '.join(fixed)}")
    for number, (info, tensor) in enumerate(searchable, 1):
        say(f"measuring {info.name} ({number}/{len(searchable)}): "
            f"{len(options.bits_choices) * len(options.clip_choices)} candidates")
        hessian = hessians.get(info.name) if hessians is not None else None
        groups.append(measure_group(info.name, info.category, tensor, hessian, options, policy,
                                    classification, device))
    if not groups:
        raise InputError(f"{checkpoint_path}: no tensor is stored as integers under the policy, so there is "
                         "nothing to fit; fit chooses bits for large float matrices")

    costs = [[c.bytes for c in g.candidates] for g in groups]
    smallest = [_cheapest(row, [c.damage for c in g.candidates]) for row, g in zip(costs, groups, strict=True)]
    if calibration_run is not None and damage_proxy == DAMAGE_HESSIAN_KL:
        # Output errors of different layers are not on one scale (residual gains, depth,
        # a tied embedding's lookup side): rescale each group's tr(dW H dW^T) so that its
        # fewest-byte candidate equals the KL that candidate alone causes at the output.
        sensitivities = kl_sensitivities(calibration_run, checkpoint.state_dict, groups, smallest, device, say)
        for group, index, kl in zip(groups, smallest, sensitivities, strict=True):
            reference = group.candidates[index].damage
            factor = kl / reference if reference > 0 else 0.0
            group.candidates = [replace(c, damage=c.damage * factor) for c in group.candidates]
    damages = [[c.damage for c in g.candidates] for g in groups]
    meta = {"arch": checkpoint.arch, "config": checkpoint.config, "step": checkpoint.step,
            "tokenizer_sha256": checkpoint.tokenizer_sha256, "source_kind": checkpoint.kind,
            "fit": {"damage_proxy": damage_proxy, "seed": options.seed}}
    real_packs = 0

    def pack(plan: list[int]) -> tuple[PackedArtifact, int]:
        nonlocal real_packs
        real_packs += 1
        packed = pack_plan(checkpoint.state_dict, policy, groups, plan, options.codec, options.user_rules, meta)
        return packed, packed.artifact_bytes + code_bytes

    def estimate(plan: list[int]) -> int:
        return sum(costs[group][index] for group, index in enumerate(plan))

    # The smallest plan, packed for real: if it does not fit, nothing does.
    say("packing the smallest plan")
    best_packed, best_total = pack(smallest)
    if best_total > options.budget:
        raise CheckFailed(
            f"{checkpoint_path}: even the smallest plan (each matrix at its fewest-byte candidate) needs "
            f"{best_total:,} bytes (artifact {best_packed.artifact_bytes:,} + code {code_bytes:,}) > budget "
            f"{options.budget:,}; raise --budget, allow fewer bits in --bits-choices, or ship less code"
        )
    best_plan = smallest
    overhead = best_packed.artifact_bytes - estimate(smallest)

    # Solve against the measured overhead; an overshoot raises the overhead and re-solves.
    margin = 0
    for _attempt in range(MAX_SOLVE_ATTEMPTS):
        capacity = options.budget - code_bytes - overhead - margin
        plan = solve_knapsack(costs, damages, capacity, options.resolution)
        if plan is None:
            break
        plan = fill_greedy(costs, damages, plan, capacity)
        if plan == best_plan:
            break
        say(f"packing a plan estimated at {estimate(plan) + overhead:,} model bytes")
        packed, total = pack(plan)
        if total <= options.budget:
            if sum(damages[g][i] for g, i in enumerate(plan)) <= sum(damages[g][i] for g, i in enumerate(best_plan)):
                best_plan, best_packed, best_total = plan, packed, total
            break
        overshoot = total - options.budget
        overhead = max(overhead, packed.artifact_bytes - estimate(plan))
        margin = max(2 * margin, overshoot)

    # Fill the real headroom: one upgrade at a time, each verified by a real pack.
    rejected: set[tuple[int, int]] = set()
    fixup_packs = 0
    while fixup_packs < MAX_FIXUP_PACKS:
        move = best_upgrade(costs, damages, best_plan, options.budget - best_total, rejected)
        if move is None:
            break
        group, index = move
        trial = list(best_plan)
        trial[group] = index
        fixup_packs += 1
        packed, total = pack(trial)
        if total <= options.budget:
            best_plan, best_packed, best_total = trial, packed, total
        else:
            rejected.add(move)
    if fixup_packs >= MAX_FIXUP_PACKS:
        notices.append(f"notice: stopped filling the headroom after {MAX_FIXUP_PACKS} verifying packs")

    line = BudgetLine(options.budget, best_packed.artifact_bytes, code_bytes, 0, options.code_rule)
    if not line.ok:  # unreachable by construction; a guard, never a silent overshoot
        raise CheckFailed(f"{checkpoint_path}: the chosen plan is over budget by {-line.headroom:,} bytes; "
                          "report this as a bug")
    return FitResult(best_packed, groups, best_plan, line, damage_proxy, calibration,
                     estimate(best_plan) + overhead, overhead, smallest_step(costs, damages, best_plan, rejected),
                     real_packs, len(rejected), fixed, notices)


def _cheapest(costs: list[int], damages: list[float]) -> int:
    """Index of the fewest bytes (least damage among equals, then the lower index)."""
    return min(range(len(costs)), key=lambda index: (costs[index], damages[index], index))
