"""Fit a checkpoint to a byte budget: choose how to store every matrix so that the
measured damage is smallest while artifact + code bytes stay within the budget.

This module owns the `artifactkit fit` pipeline, one function per step:

1. **Calibrate** (`_calibrate`): with a model factory, calibration tokens (self-sampled
   or training shards, never validation), each F.linear weight's Hessian and each
   F.embedding table's lookup counts (`sensitivity`). Without one: the squared weight
   error, and the result says so.
2. **Groups** (`_build_groups`): every expanded matrix the base policy (int6-mixed)
   stores as integers is one group with its candidates (`candidates`: the policy's own
   scheme, bits x clip choices, SDClip steps, keep-float, optional LQER), bytes measured
   with the real codec on the matrix alone, damage as per-role proxy terms. Everything
   else (control fp32, small fp16, raw) is fixed. Matrices with no calibration statistic
   keep the policy's scheme under plain `hessian` damage.
3. **Scale** (`_scale_damage`): under `hessian-kl` each role's terms are rescaled so
   that the group's fewest-byte candidate equals the KL it causes alone at the output
   (a tied embedding: one KL per role). The proxy ranks a matrix's candidates; the KL
   puts matrices (and roles) on one scale, in nats per token.
4. **Solve and verify** (`_solve`): a multiple-choice knapsack (`knapsack`) against the
   measured overhead of a real pack; overshoots raise the overhead and re-solve (the
   smallest plan, checked first, is the fallback, so the budget is never exceeded);
   upgrades that fit the real headroom are then tried one by one with real packs. The
   policy's own plan (what `pack` writes) is packed too when it fits: fit never returns
   more damage than it.

Deterministic for a fixed seed: calibration tokens come from a seeded generator, GPTQ
and the codecs are deterministic, and every tie is broken by index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from artifactkit.budget import BudgetLine, count_code
from artifactkit.checkpoint import LoadedCheckpoint, load_checkpoint
from artifactkit.errors import CheckFailed, InputError
from artifactkit.fit.candidates import (
    DEFAULT_BITS_CHOICES,
    DEFAULT_CLIP_CHOICES,
    DEFAULT_STEP_GRID,
    CandidateOptions,
    Group,
    MatrixStats,
    build_group,
)
from artifactkit.fit.knapsack import (
    DEFAULT_RESOLUTION,
    best_upgrade,
    cheapest_index,
    fill_greedy,
    smallest_step,
    solve_knapsack,
)
from artifactkit.fit.sensitivity import Calibration, CalibrationRequest, collect_calibration, kl_sensitivities
from artifactkit.format.akit import DEFAULT_CODEC, PackedArtifact, encode_artifact
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.classify import UserRules, classify_state_dict
from artifactkit.plan.policy import Policy, default_policy
from artifactkit.quantize.apply import QuantizedModel, quantize_state_dict
from artifactkit.roundtrip.packing import checkpoint_meta
from eval.runtime import resolve_device

DEFAULT_CALIB_SEQS = 64
MAX_SOLVE_ATTEMPTS = 8  # re-solves after a real pack overshoots the estimate
MAX_FIXUP_PACKS = 24  # real packs spent on filling the last headroom
DAMAGE_HESSIAN = "hessian"
DAMAGE_HESSIAN_KL = "hessian-kl"
DAMAGE_CHOICES = (DAMAGE_HESSIAN_KL, DAMAGE_HESSIAN)
DAMAGE_WEIGHT = "weight-mse"


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
    step_grid: tuple[float, ...] = DEFAULT_STEP_GRID  # SDClip steps in row stds; () for none
    keep_float: bool = True  # the matrix may stay fp16
    lqer_rank: int = 0  # > 0: also offer each int candidate with a rank-r LQER correction
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

    def candidate_options(self) -> CandidateOptions:
        return CandidateOptions(bits_choices=self.bits_choices, clip_choices=self.clip_choices,
                                step_grid=self.step_grid, keep_float=self.keep_float, lqer_rank=self.lqer_rank,
                                gptq=self.gptq, act_order=self.act_order, search_clip=self.search_clip,
                                codec=self.codec)

    def calibration_request(self) -> CalibrationRequest:
        return CalibrationRequest(calib=self.calib, calib_seqs=self.calib_seqs, seq_len=self.seq_len,
                                  config=self.config, seed=self.seed, progress=self.progress, warn=self.warn)


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
    policy_plan_damage: float | None = None  # the damage of what `pack` writes, when it fits

    @property
    def total_damage(self) -> float:
        return float(sum(group.candidates[index].damage for group, index in zip(self.groups, self.plan, strict=True)))

    def plan_rows(self) -> list[dict[str, Any]]:
        rows = []
        for group, index in zip(self.groups, self.plan, strict=True):
            candidate = group.candidates[index]
            rows.append({"name": group.name, "category": group.category, "shape": list(group.shape),
                         "scheme": candidate.kind, "bits": candidate.bits, "clip": candidate.clip,
                         "method": candidate.method, "family": candidate.family, "lqer_rank": candidate.lowrank,
                         "roles": list(group.roles), "estimated_bytes": candidate.bytes, "damage": candidate.damage})
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
            "policy_plan_damage": self.policy_plan_damage,
            "plan": self.plan_rows(),
            "fixed_at_policy": self.fixed,
            "notices": self.notices,
        }


# --------------------------------------------------------------------------- steps


@dataclass
class _Setup:
    checkpoint: LoadedCheckpoint
    policy: Policy
    device: torch.device
    code_bytes: int
    damage_proxy: str
    calibration: Calibration | None
    notices: list[str]


def _calibrate(checkpoint_path: str | Path, options: FitOptions) -> _Setup:
    checkpoint = load_checkpoint(checkpoint_path)
    notices = list(checkpoint.notices)
    code_bytes = count_code(list(options.code_files)).bytes_for(options.code_rule)
    device = resolve_device(options.device)
    policy = default_policy()
    if options.small_threshold is not None:
        policy = replace(policy, small_threshold=int(options.small_threshold))
    arch = options.model or checkpoint.arch
    if options.config and not arch:
        raise InputError(f"{checkpoint_path}: --config {options.config} gives a model factory its arguments, but "
                         "this checkpoint names no factory; pass --model module:function as well")
    if arch:
        calibration = collect_calibration(checkpoint, options.calibration_request(), arch, device)
        return _Setup(checkpoint, policy, device, code_bytes, options.damage, calibration, notices)
    if options.calib not in (None, "self"):
        raise InputError(f"{checkpoint_path}: --calib {options.calib} needs a model to run the tokens through, "
                         "and this checkpoint names no factory; pass --model module:function")
    notices.append(f"notice: {checkpoint_path}: no model factory reference and no --model, so no calibration; "
                   "damage is the squared weight error (weight-MSE proxy), not the output error")
    return _Setup(checkpoint, policy, device, code_bytes, DAMAGE_WEIGHT, None, notices)


def _build_groups(setup: _Setup, options: FitOptions) -> tuple[list[Group], list[str]]:
    expanded, _ = expand_banks(setup.checkpoint.state_dict)
    classification = classify_state_dict(expanded, options.user_rules, setup.policy.small_threshold)
    guard = classification.guard_message()
    if guard:
        setup.notices.append(f"warning: {setup.checkpoint.path}: {guard}")
    calibration = setup.calibration
    searchable, fixed = [], []
    for info in classification.tensors:
        tensor = expanded[info.name].detach().cpu()
        scheme, _ = setup.policy.scheme_for(info.name, info.category, tensor)
        if not scheme.is_int:
            continue
        stats = calibration.stats(info.name) if calibration is not None else MatrixStats()
        if calibration is not None and stats.hessian is None and setup.damage_proxy != DAMAGE_HESSIAN_KL:
            fixed.append(info.name)
            continue
        searchable.append((info, tensor, scheme, stats))
    if calibration is not None:
        lookups = [info.name for info, _, _, stats in searchable if stats.hessian is None]
        if lookups:
            setup.notices.append(
                f"notice: {len(lookups)} integer tensor(s) had no Hessian (not used by F.linear in the forward pass): "
                f"round-to-nearest, squared weight error weighted by lookup counts where F.embedding used them, "
                f"rescaled by their output KL: {', '.join(lookups)}")
    if fixed:
        setup.notices.append(f"notice: {len(fixed)} integer tensor(s) had no Hessian (not used by F.linear in the "
                             f"forward pass) and keep the policy's scheme: {', '.join(fixed)}")
    if not searchable:
        raise InputError(f"{setup.checkpoint.path}: no tensor is stored as integers under the policy, so there is "
                         "nothing to fit; fit chooses schemes for large float matrices (--small-threshold lowers "
                         "the size below which tensors stay fp16)")
    say = options.progress or (lambda _message: None)
    candidate_options = options.candidate_options()
    groups = []
    for number, (info, tensor, scheme, stats) in enumerate(searchable, 1):
        say(f"measuring {info.name} ({number}/{len(searchable)})")
        groups.append(build_group(info.name, info.category, tensor, stats, setup.policy, scheme, candidate_options,
                                  setup.device))
    return groups, fixed


def _scale_damage(setup: _Setup, groups: list[Group], options: FitOptions) -> None:
    """hessian-kl: each role's terms times the KL its fewest-byte candidate causes alone,
    divided by that candidate's term (a role whose reference term is 0 contributes 0)."""
    if setup.calibration is None or setup.damage_proxy != DAMAGE_HESSIAN_KL:
        return
    reference = [cheapest_index([c.bytes for c in g.candidates], [c.damage for c in g.candidates]) for g in groups]
    measured = kl_sensitivities(setup.calibration, setup.checkpoint.state_dict, groups, reference, setup.device,
                                options.progress or (lambda _message: None))
    for group, index, kls in zip(groups, reference, measured, strict=True):
        terms = group.candidates[index].terms
        group.rescale(tuple(kl / term if term > 0 else 0.0 for kl, term in zip(kls, terms, strict=True)))


def _policy_index(group: Group) -> int:
    """The index of the group's policy candidate (exactly what `pack` stores)."""
    return next(index for index, candidate in enumerate(group.candidates) if candidate.family == "policy")


def _policy_codes(groups: list[Group]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (codes, scales) of each group's policy candidate that the policy stores as int codes
    (a policy that keeps a matrix in float, e.g. `--policy fp16`, has no codes to hand over)."""
    entries = [(group.name, group.entries[_policy_index(group)].quantized) for group in groups]
    return {name: (quantized.codes, quantized.scales) for name, quantized in entries if quantized is not None}


class _Packer:
    """Real packs of plans: the base model (every tensor as the policy stores it) built
    once, each plan's chosen entries swapped in."""

    def __init__(self, setup: _Setup, groups: list[Group], options: FitOptions) -> None:
        checkpoint = setup.checkpoint
        self.meta = {**checkpoint_meta(checkpoint), "fit": {"damage_proxy": setup.damage_proxy, "seed": options.seed}}
        # Every group's policy candidate already holds the policy's codes (and every plan
        # swaps a group's base entry out), so the base quantizes only the other tensors.
        self.base = quantize_state_dict(checkpoint.state_dict, setup.policy, options.user_rules, self.meta,
                                        precomputed=_policy_codes(groups))
        self.policy = replace(setup.policy, name=f"fit({setup.policy.name})")
        self.groups, self.codec, self.code_bytes = groups, options.codec, setup.code_bytes
        self.count = 0

    def pack(self, plan: list[int]) -> tuple[PackedArtifact, int]:
        self.count += 1
        chosen = {group.name: group.entries[index] for group, index in zip(self.groups, plan, strict=True)}
        entries = [chosen.get(entry.name, entry) for entry in self.base.entries]
        model = QuantizedModel(entries, self.base.dropped, self.base.banks, self.policy, self.base.classification,
                               self.base.meta)
        packed = encode_artifact(model, self.codec)
        return packed, packed.artifact_bytes + self.code_bytes


@dataclass
class _Solution:
    plan: list[int]
    packed: PackedArtifact
    total: int
    overhead: int
    rejected: set[tuple[int, int]]
    policy_plan_damage: float | None
    notices: list[str]


def _tables(groups: list[Group]) -> tuple[list[list[int]], list[list[float]]]:
    """The knapsack's inputs: each group's candidate bytes and (scaled) damages."""
    return [[c.bytes for c in g.candidates] for g in groups], [[c.damage for c in g.candidates] for g in groups]


def _solve(checkpoint_path: str | Path, groups: list[Group], costs: list[list[int]], damages: list[list[float]],
           packer: _Packer, options: FitOptions) -> _Solution:
    notices: list[str] = []

    def estimate(plan: list[int]) -> int:
        return sum(costs[group][index] for group, index in enumerate(plan))

    def damage(plan: list[int]) -> float:
        return sum(damages[group][index] for group, index in enumerate(plan))

    say = options.progress or (lambda _message: None)
    smallest = [cheapest_index(row, damage_row) for row, damage_row in zip(costs, damages, strict=True)]
    say("packing the smallest plan")
    best_packed, best_total = packer.pack(smallest)
    if best_total > options.budget:
        raise CheckFailed(
            f"{checkpoint_path}: even the smallest plan (each matrix at its fewest-byte candidate) needs "
            f"{best_total:,} bytes (artifact {best_packed.artifact_bytes:,} + code {packer.code_bytes:,}) > budget "
            f"{options.budget:,}; raise --budget, allow coarser steps (--step-grid) or fewer bits (--bits-choices), "
            "lower --small-threshold so small tensors can be quantized too, or ship less code")
    best_plan = smallest
    overhead = best_packed.artifact_bytes - estimate(smallest)

    # Solve against the measured overhead; an overshoot raises the overhead and re-solves.
    margin = 0
    for _attempt in range(MAX_SOLVE_ATTEMPTS):
        capacity = options.budget - packer.code_bytes - overhead - margin
        plan = solve_knapsack(costs, damages, capacity, options.resolution)
        if plan is None:
            break
        plan = fill_greedy(costs, damages, plan, capacity)
        if plan == best_plan:
            break
        say(f"packing a plan estimated at {estimate(plan) + overhead:,} model bytes")
        packed, total = packer.pack(plan)
        if total <= options.budget:
            if damage(plan) <= damage(best_plan):
                best_plan, best_packed, best_total = plan, packed, total
            break
        overhead = max(overhead, packed.artifact_bytes - estimate(plan))
        margin = max(2 * margin, total - options.budget)

    # The plan `pack` would write: when it fits, fit never returns more damage than it.
    policy_plan = [_policy_index(group) for group in groups]
    policy_plan_damage = None
    if policy_plan != best_plan:
        packed, total = packer.pack(policy_plan)
        if total <= options.budget:
            policy_plan_damage = damage(policy_plan)
            if policy_plan_damage < damage(best_plan):
                best_plan, best_packed, best_total = policy_plan, packed, total
                notices.append("notice: the policy's own plan (what pack writes) had the least damage of the plans "
                               "packed; it is the result")
    else:
        policy_plan_damage = damage(policy_plan)

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
        packed, total = packer.pack(trial)
        if total <= options.budget:
            best_plan, best_packed, best_total = trial, packed, total
        else:
            rejected.add(move)
    if fixup_packs >= MAX_FIXUP_PACKS:
        notices.append(f"notice: stopped filling the headroom after {MAX_FIXUP_PACKS} verifying packs")
    return _Solution(best_plan, best_packed, best_total, overhead, rejected, policy_plan_damage, notices)


@dataclass
class FitProblem:
    """Steps 1-3 done: every group's candidates with bytes and scaled damage. Solving it
    for a budget (`solve_budget`) is cheap, so benchmarks solve one problem many times."""

    checkpoint_path: str | Path
    setup: _Setup
    groups: list[Group]
    fixed: list[str]
    packer: _Packer


def prepare_fit(checkpoint_path: str | Path, options: FitOptions) -> FitProblem:
    """Calibrate, build every group's candidates and scale their damage (steps 1-3)."""
    setup = _calibrate(checkpoint_path, options)
    groups, fixed = _build_groups(setup, options)
    _scale_damage(setup, groups, options)
    return FitProblem(checkpoint_path, setup, groups, fixed, _Packer(setup, groups, options))


def fit_checkpoint(checkpoint_path: str | Path, options: FitOptions) -> FitResult:
    """The whole `fit` pipeline (see the module docstring). Raises CheckFailed when even
    the smallest plan does not fit the budget."""
    return solve_budget(prepare_fit(checkpoint_path, options), options)


def solve_budget(problem: FitProblem, options: FitOptions) -> FitResult:
    """Step 4 for `options.budget` (and `options.code_rule`'s code bytes, counted when the
    problem was prepared): solve, verify with real packs, and report."""
    setup, groups, fixed, packer, checkpoint_path = (problem.setup, problem.groups, problem.fixed, problem.packer,
                                                     problem.checkpoint_path)
    packer.count = 0
    costs, damages = _tables(groups)
    solution = _solve(checkpoint_path, groups, costs, damages, packer, options)
    line = BudgetLine(options.budget, solution.packed.artifact_bytes, setup.code_bytes, 0, options.code_rule)
    if not line.ok:  # unreachable by construction; a guard, never a silent overshoot
        raise CheckFailed(f"{checkpoint_path}: the chosen plan is over budget by {-line.headroom:,} bytes; "
                          "report this as a bug")
    estimated = sum(costs[g][i] for g, i in enumerate(solution.plan)) + solution.overhead
    calibration_info = setup.calibration.info if setup.calibration is not None else {}
    return FitResult(solution.packed, groups, solution.plan, line, setup.damage_proxy, calibration_info, estimated,
                     solution.overhead, smallest_step(costs, damages, solution.plan, solution.rejected),
                     packer.count, len(solution.rejected), list(fixed), setup.notices + solution.notices,
                     solution.policy_plan_damage)
