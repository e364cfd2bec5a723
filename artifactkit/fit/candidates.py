"""Every way `fit` may store one matrix, each with its bytes measured by the real codec
and its damage as per-role proxy terms.

A group is one integer-quantized matrix of the base policy. Its candidates come in
families (`FitOptions` switches each on or off):

| family   | what                                                                              |
|----------|-----------------------------------------------------------------------------------|
| policy   | exactly what `pack` stores (the policy's scheme, round-to-nearest): with it, a     |
|          | budget that allows the default pack never gets a worse plan                        |
| choices  | bits x clip rules (`--bits-choices` x `--clip-choices`), GPTQ with the clip       |
|          | searched through GPTQ when calibration ran                                         |
| steps    | SDClip step sizes: scale = k * std(row) / levels, the step (k / levels, in row    |
|          | stds) on a geometric grid -- with entropy-coded codes the step, not the nominal   |
|          | width, sets the bytes; each step takes the narrowest width whose range still      |
|          | reaches MIN_CLIP_STDS row stds                                                    |
| float    | keep the matrix float (the policy's fp16 scheme for small tensors)               |
| lqer     | an int candidate plus a rank-r LQER correction of its error (`quantize.lqer`)      |

Damage terms, one per role the matrix plays in the forward pass:
`linear` tr(dW H dW^T) with H = 2 X^T X / n from its F.linear inputs; `lookup`
sum_i c_i ||dW_i||^2 with c_i how often row i was looked up by F.embedding (a tied
embedding has both roles); `weight` ||dW||^2 when nothing was calibrated. The
pipeline scales each role's terms to nats (`sensitivity.kl_sensitivities`), and a
candidate's damage is the scaled sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from artifactkit.errors import InputError
from artifactkit.format.akit import encode_artifact
from artifactkit.plan.classify import Classification
from artifactkit.plan.clip_rules import parse_clip_rule
from artifactkit.plan.policy import FP16, Policy, Scheme, int_scheme
from artifactkit.plan.schemes import MAX_BITS, MIN_BITS, dtype_name, int_levels
from artifactkit.quantize.apply import QuantEntry, QuantizedModel
from artifactkit.quantize.gptq import PreparedHessian, gptq_candidates, gptq_quantize, prepare_hessian
from artifactkit.quantize.intn import QuantizedTensor, as_rows, quantize, row_clip
from artifactkit.quantize.lqer import DEFAULT_GROUP, lowrank_factors

DEFAULT_BITS_CHOICES = (4, 5, 6, 7, 8)
DEFAULT_CLIP_CHOICES = ("percentile", "mse")
# Steps in row standard deviations: geometric (x ~1.2) from 0.12 (int8, k = 15) to 2.1 (int4,
# k = 14.7); the records' int6 k = 13 is a step of 0.42, their int7 embedding k = 15 a step of
# 0.24. The steps above 1.0 are the low-byte end: a record re-tuned to k x 2.4 (int6 step 1.0,
# int8 embedding step 0.28) is smaller than any plan a grid ending at 1.0 can make, and the
# knapsack needs coarse steps for the insensitive matrices to keep the sensitive ones fine
# (bench/frontier.py, reports/frontier.md).
DEFAULT_STEP_GRID = (0.12, 0.145, 0.175, 0.21, 0.25, 0.3, 0.36, 0.43, 0.52, 0.62, 0.75, 0.88, 1.0,
                     1.2, 1.45, 1.75, 2.1)
MIN_CLIP_STDS = 12.0  # a step's width is the narrowest whose range reaches this many row stds
DEFAULT_LQER_RANK = 4

ROLE_LINEAR, ROLE_LOOKUP, ROLE_WEIGHT = "linear", "lookup", "weight"


@dataclass(frozen=True)
class Candidate:
    """One way to store a matrix: measured bytes, per-role damage terms, scaled damage."""

    family: str  # policy | choices | steps | float | lqer
    kind: str  # "int" | "fp16"
    bits: int | None
    clip: str | None
    method: str  # "gptq" | "rtn" | "float"
    lowrank: int  # LQER rank (0: none)
    bytes: int  # what the matrix's sections store, measured with the real codec on it alone
    terms: tuple[float, ...]  # per role of the group, unscaled
    damage: float  # sum of role factor x term (the factors start at 1)

    @property
    def label(self) -> str:
        if self.kind != "int":
            return self.kind
        text = f"int{self.bits} {self.clip} {self.method}"
        return text + (f" +lqer{self.lowrank}" if self.lowrank else "")


@dataclass
class Group:
    """One integer-quantized matrix of the base policy, its candidates and their entries."""

    name: str
    category: str
    shape: tuple[int, ...]
    roles: tuple[str, ...] = (ROLE_LINEAR,)
    candidates: list[Candidate] = field(default_factory=list)
    entries: list[QuantEntry] = field(default_factory=list)

    def rescale(self, factors: tuple[float, ...]) -> None:
        """Put each role's terms on the common scale: damage = sum(factor x term)."""
        self.candidates = [replace(c, damage=float(sum(f * t for f, t in zip(factors, c.terms, strict=True))))
                           for c in self.candidates]


@dataclass(frozen=True)
class CandidateOptions:
    bits_choices: tuple[int, ...] = DEFAULT_BITS_CHOICES
    clip_choices: tuple[str, ...] = DEFAULT_CLIP_CHOICES
    step_grid: tuple[float, ...] = DEFAULT_STEP_GRID
    keep_float: bool = True
    lqer_rank: int = 0  # 0: no LQER candidates
    gptq: bool = True
    act_order: bool = True
    search_clip: bool = True
    codec: str = "ans"


@dataclass(frozen=True)
class MatrixStats:
    """What calibration knows about one matrix: its F.linear Hessian and its lookup counts."""

    hessian: torch.Tensor | None = None
    lookup_counts: torch.Tensor | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        roles = tuple(role for role, known in ((ROLE_LINEAR, self.hessian), (ROLE_LOOKUP, self.lookup_counts))
                      if known is not None)
        return roles or (ROLE_WEIGHT,)


# --------------------------------------------------------------------------- options


def parse_bits_choices(text: str) -> tuple[int, ...]:
    """`"4,5,6"` -> (4, 5, 6), sorted and unique; `""` / `none` -> () (no such candidates)."""
    if str(text).strip().lower() in ("", "none"):
        return ()
    values = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if not part.isdigit() or not MIN_BITS <= int(part) <= MAX_BITS:
            raise InputError(f"--bits-choices {text!r}: {part!r} is not a width in {MIN_BITS}..{MAX_BITS}; "
                             "pass a comma list such as 4,5,6,7,8 (or none)")
        values.append(int(part))
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


def parse_step_grid(text: str) -> tuple[float, ...]:
    """`auto` -> DEFAULT_STEP_GRID, `none` -> (), else a comma list of steps in row stds."""
    text = str(text).strip().lower()
    if text == "auto":
        return DEFAULT_STEP_GRID
    if text in ("", "none"):
        return ()
    steps = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= 4):
            raise InputError(f"--step-grid {text!r}: {part!r} is not a step in (0, 4] row stds; "
                             "pass auto, none or a comma list such as 0.2,0.3,0.45")
        steps.append(value)
    return tuple(sorted(set(steps)))


def width_for_step(step: float, bits_choices: tuple[int, ...]) -> int:
    """The narrowest width (of `bits_choices`, else 2..8) whose levels x step reach
    MIN_CLIP_STDS row stds; the widest when none does."""
    widths = bits_choices or tuple(range(MIN_BITS, MAX_BITS + 1))
    for bits in sorted(widths):
        if int_levels(bits) * step >= MIN_CLIP_STDS:
            return bits
    return max(widths)


# --------------------------------------------------------------------------- measuring


def damage_terms(weight: torch.Tensor, restored: torch.Tensor, stats: MatrixStats) -> tuple[float, ...]:
    """One term per role (`MatrixStats.roles`), float64."""
    rows = weight.shape[0]
    delta = (weight.detach().double() - restored.double()).reshape(rows, -1)
    terms = []
    for role in stats.roles:
        if role == ROLE_LINEAR:
            terms.append(float(((delta @ stats.hessian.double()) * delta).sum()))
        elif role == ROLE_LOOKUP:
            terms.append(float((delta.pow(2).sum(dim=1) * stats.lookup_counts.double()).sum()))
        else:
            terms.append(float(delta.pow(2).sum()))
    return tuple(terms)


def stored_bytes(entry: QuantEntry, policy: Policy, codec: str) -> int:
    """Bytes the entry's sections take when encoded on their own (no header)."""
    alone = QuantizedModel([entry], [], [], policy, Classification([]), {})
    return int(sum(section["stored_bytes"] for section in encode_artifact(alone, codec).header["sections"]))


def _entry(name: str, category: str, tensor: torch.Tensor, scheme: Scheme, reason: str,
           quantized: QuantizedTensor | None = None) -> QuantEntry:
    entry = QuantEntry(name, category, scheme, reason, tuple(tensor.shape), dtype_name(tensor.dtype),
                       quantized=quantized)
    if quantized is None:
        entry.values = tensor.detach().to(torch.float16).contiguous()
    return entry


class GroupBuilder:
    """Builds one group's candidates; keeps the Hessian factored once for all of them."""

    def __init__(self, name: str, category: str, tensor: torch.Tensor, stats: MatrixStats, policy: Policy,
                 options: CandidateOptions, device: torch.device) -> None:
        self.name, self.category, self.tensor, self.stats = name, category, tensor.detach().cpu(), stats
        self.policy, self.options, self.device = policy, options, device
        self.use_gptq = options.gptq and stats.hessian is not None and tensor.ndim == 2 and tensor.numel() > 0
        self.prepared: PreparedHessian | None = (
            prepare_hessian(stats.hessian, act_order=options.act_order, device=device, name=name)
            if self.use_gptq else None)
        self.group = Group(name, category, tuple(tensor.shape), stats.roles)

    def add(self, family: str, entry: QuantEntry, method: str) -> None:
        restored = entry.restored().to(torch.float32)
        scheme = entry.scheme
        lowrank = entry.lowrank.rank if entry.lowrank is not None else 0
        terms = damage_terms(self.tensor, restored, self.stats)
        self.group.candidates.append(Candidate(
            family, str(scheme.kind), scheme.bits, scheme.clip, method, lowrank,
            stored_bytes(entry, self.policy, self.options.codec), terms, float(sum(terms))))
        self.group.entries.append(entry)

    def add_int(self, family: str, bits: int, clip: str, quantized: QuantizedTensor, method: str) -> None:
        reason = f"fit: int{bits}, clip {clip}, {method}"
        entry = _entry(self.name, self.category, self.tensor, int_scheme(bits, clip), reason, quantized)
        self.add(family, entry, method)
        if self.options.lqer_rank and family != "policy":
            self._add_lqer(entry)

    def _add_lqer(self, entry: QuantEntry) -> None:
        rows = self.tensor.shape[0]
        weight = as_rows(self.tensor)
        error = weight - entry.quantized.dequantize().reshape(rows, -1)
        rank = min(self.options.lqer_rank, *weight.shape)
        if rank < 1 or (rank * weight.shape[1]) % DEFAULT_GROUP:
            return  # no LQER layout fits this matrix
        corrected = replace(entry, lowrank=lowrank_factors(error, rank, DEFAULT_GROUP),
                            reason=entry.reason + f", +lqer rank {rank}")
        self.add("lqer", corrected, self.group.candidates[-1].method)

    def _quantize(self, bits: int, clip: str) -> tuple[QuantizedTensor, str]:
        if not self.use_gptq:
            return quantize(self.tensor, bits, clip), "rtn"
        codes, scales = gptq_quantize(self.tensor, self.prepared, bits, parse_clip_rule(clip), device=self.device,
                                      name=self.name, act_order=self.options.act_order,
                                      search_clip=self.options.search_clip)
        return QuantizedTensor(codes.cpu(), scales.cpu(), bits, tuple(self.tensor.shape)), "gptq"

    def build(self, policy_scheme: Scheme) -> Group:
        options = self.options
        # policy: exactly what `pack` stores, so the default pack is always a candidate plan
        self.add_int("policy", int(policy_scheme.bits), str(policy_scheme.clip),
                     quantize(self.tensor, int(policy_scheme.bits), str(policy_scheme.clip)), "rtn")
        for bits in options.bits_choices:
            for clip in options.clip_choices:
                quantized, method = self._quantize(bits, clip)
                self.add_int("choices", bits, clip, quantized, method)
        self._add_steps()
        if options.keep_float:
            self.add("float", _entry(self.name, self.category, self.tensor, FP16, "fit: kept float (fp16)"), "float")
        return self.group

    def _add_steps(self) -> None:
        if not self.options.step_grid:
            return
        weight = as_rows(self.tensor)
        specs = []
        for step in self.options.step_grid:
            bits = width_for_step(step, self.options.bits_choices)
            multiple = step * int_levels(bits)
            specs.append((bits, f"std:{multiple:.4g}"))
        if self.use_gptq:
            clips = [(bits, row_clip(weight, bits, parse_clip_rule(clip))) for bits, clip in specs]
            results = gptq_candidates(self.tensor, self.prepared, clips, device=self.device, name=self.name)
            for (bits, clip), (codes, scales) in zip(specs, results, strict=True):
                self.add_int("steps", bits, clip, QuantizedTensor(codes, scales, bits, tuple(self.tensor.shape)),
                             "gptq")
        else:
            for bits, clip in specs:
                self.add_int("steps", bits, clip, quantize(self.tensor, bits, clip), "rtn")


def build_group(name: str, category: str, tensor: torch.Tensor, stats: MatrixStats, policy: Policy,
                policy_scheme: Scheme, options: CandidateOptions, device: torch.device) -> Group:
    """Every candidate of one matrix (see the module docstring), bytes and terms measured."""
    return GroupBuilder(name, category, tensor, stats, policy, options, device).build(policy_scheme)

