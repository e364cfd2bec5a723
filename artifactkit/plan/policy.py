"""Quantization policies: category (and optionally a name pattern) -> scheme.

A policy is a validated, versioned dataclass that serialises into the artifact
header, so every artifact says exactly how it was made. Decision order for one tensor
(the first that applies wins, and the reason is recorded):

  1. category `training_only`                 -> drop
  2. a `--bits-for REGEX=N` override          -> intN (float tensors with >= 2 dims)
  3. not a floating-point tensor              -> raw (stored as is)
  4. category `control`                       -> fp32
  5. small (<= threshold elements) or 1-D     -> fp16
  6. the category's scheme (attn, mlp, embed, other)

A policy with `small_first` (the seed's packer) checks 5 before 4 and by element count
only: every small tensor ships fp16, controls included, and only large controls stay
fp32.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from artifactkit.errors import InputError
from artifactkit.plan.clip_rules import parse_clip_rule
from artifactkit.plan.rules import SMALL_TENSOR_THRESHOLD
from artifactkit.plan.schemes import SchemeKind, check_bits, scheme_label, stored_bits

POLICY_VERSION = 1
# The seed's CTRL_PATS: substrings that keep a (large) tensor fp32 in its packer.
SEED_CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "skip_weight", "q_gain", "bigram.scale", "smear")
QUANTIZED_CATEGORIES = ("attn", "mlp", "embed", "other")
# int8 keeps the public baseline's fixed percentile; narrower widths search per row.
DEFAULT_CLIP_BY_BITS = {8: "percentile:0.9999984"}
DEFAULT_CLIP = "percentile"


def default_clip(bits: int) -> str:
    return DEFAULT_CLIP_BY_BITS.get(bits, DEFAULT_CLIP)


@dataclass(frozen=True)
class Scheme:
    kind: SchemeKind
    bits: int | None = None
    clip: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SchemeKind(self.kind))

    @property
    def is_int(self) -> bool:
        return self.kind is SchemeKind.INT

    @property
    def label(self) -> str:
        return scheme_label(self.kind, self.bits)

    @property
    def stored_bits(self) -> int | None:
        return stored_bits(self.kind, self.bits)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": str(self.kind)}
        if self.is_int:
            out.update(bits=self.bits, clip=self.clip)
        return out


def int_scheme(bits: int, clip: str | None = None) -> Scheme:
    check_bits(bits, "integer scheme")
    return Scheme(SchemeKind.INT, bits, clip or default_clip(bits))


FP16, FP32, RAW, DROP = (Scheme(kind) for kind in (SchemeKind.FP16, SchemeKind.FP32, SchemeKind.RAW, SchemeKind.DROP))


@dataclass(frozen=True)
class Policy:
    name: str
    category_schemes: Mapping[str, Scheme]  # large float tensors of attn / mlp / embed / other
    bits_for: tuple[tuple[str, int], ...] = ()
    clip_for: Mapping[str, str] = field(default_factory=dict)  # category -> clip rule text
    small_threshold: int = SMALL_TENSOR_THRESHOLD
    version: int = POLICY_VERSION
    small_first: bool = False  # the seed's order: size before the control rule (see the module docstring)
    control_patterns: tuple[str, ...] = ()  # name substrings that also count as control (the seed's CTRL_PATS)

    def scheme_for(self, name: str, category: str, tensor: torch.Tensor) -> tuple[Scheme, str]:
        """(scheme, reason) for one expanded tensor."""
        if category == "training_only":
            return DROP, "training-only tensors are not shipped"
        quantizable = tensor.is_floating_point() and tensor.dim() >= 2
        for pattern, bits in self.bits_for:
            if quantizable and re.search(pattern, name):
                return int_scheme(bits, self.clip_for.get(category)), f"--bits-for {pattern}={bits}"
        if not tensor.is_floating_point():
            return RAW, "not a floating-point tensor: stored as is"
        if self.small_first and tensor.numel() <= self.small_threshold:
            return FP16, f"small tensor (<= {self.small_threshold:,} elements, checked before the control rule): fp16"
        if category == "control" or any(pattern in name for pattern in self.control_patterns):
            return FP32, "control tensors stay fp32"
        if tensor.numel() <= self.small_threshold or tensor.dim() < 2:
            return FP16, f"small tensor (<= {self.small_threshold:,} elements or 1-D): fp16"
        scheme = self.category_schemes.get(category, self.category_schemes.get("other", FP16))
        if scheme.is_int and category in self.clip_for:
            scheme = replace(scheme, clip=self.clip_for[category])
        return scheme, f"policy {self.name}: {category} -> {scheme.label}"

    def with_bits(self, overrides: Mapping[str, int]) -> Policy:
        schemes = dict(self.category_schemes)
        for category, bits in overrides.items():
            if category not in QUANTIZED_CATEGORIES:
                raise InputError(
                    f"--bits {category}={bits}: unknown category; use one of {', '.join(QUANTIZED_CATEGORIES)}"
                )
            schemes[category] = int_scheme(bits, self.clip_for.get(category))
        label = ",".join(f"{c}={b}" for c, b in overrides.items())
        return replace(self, name=f"{self.name}+{label}" if label else self.name, category_schemes=schemes)

    def with_bits_for(self, rules: list[tuple[str, int]]) -> Policy:
        for pattern, bits in rules:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InputError(f"--bits-for {pattern}={bits}: bad regular expression ({exc}); fix the pattern") from exc
            int_scheme(bits)
        return replace(self, bits_for=tuple(self.bits_for) + tuple(rules))

    def with_clip(self, overrides: Mapping[str, str]) -> Policy:
        for category, text in overrides.items():
            if category not in QUANTIZED_CATEGORIES:
                raise InputError(f"--clip {category}={text}: unknown category; use one of {', '.join(QUANTIZED_CATEGORIES)}")
            try:
                parse_clip_rule(text)
            except InputError as exc:
                raise InputError(f"--clip {category}={text}: {exc}") from exc
        merged = {**self.clip_for, **overrides}
        schemes = {c: (replace(s, clip=merged[c]) if s.is_int and c in merged else s)
                   for c, s in self.category_schemes.items()}
        return replace(self, clip_for=merged, category_schemes=schemes)

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "version": self.version,
            "categories": {c: s.to_json() for c, s in self.category_schemes.items()},
            "bits_for": [[p, b] for p, b in self.bits_for],
            "clip_for": dict(self.clip_for),
            "small_threshold": self.small_threshold,
        }
        if self.small_first:  # only when set, so every other policy's header is unchanged
            out["small_first"] = True
        if self.control_patterns:
            out["control_patterns"] = list(self.control_patterns)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        if int(data.get("version", 0)) != POLICY_VERSION:
            raise InputError(f"policy version {data.get('version')!r} is not {POLICY_VERSION}; upgrade artifactkit")
        schemes = {c: Scheme(s["kind"], s.get("bits"), s.get("clip")) for c, s in data["categories"].items()}
        return cls(str(data["name"]), schemes, tuple((p, int(b)) for p, b in data.get("bits_for", [])),
                   dict(data.get("clip_for", {})), int(data.get("small_threshold", SMALL_TENSOR_THRESHOLD)),
                   small_first=bool(data.get("small_first", False)),
                   control_patterns=tuple(str(p) for p in data.get("control_patterns", ())))


def _uniform(name: str, scheme: Scheme) -> Policy:
    return Policy(name, {c: scheme for c in QUANTIZED_CATEGORIES})


NAMED_POLICIES: dict[str, Policy] = {
    "int6-mixed": Policy(
        "int6-mixed",
        {"attn": int_scheme(6), "mlp": int_scheme(6), "embed": int_scheme(8), "other": int_scheme(8)},
    ),
    # The seed's packer (`mq6` in its train_gpt.py), reproduced: attn + mlp int6 with ONE
    # percentile per tensor and the scale floored at 1/31; embed and other int8 at the
    # 0.9999984 row percentile (weights clamped, scale floored at 1/127); every tensor of
    # <= 65,536 elements fp16 before the control rule, large controls fp32.
    "seed": Policy(
        "seed",
        {"attn": int_scheme(6, "seed"), "mlp": int_scheme(6, "seed"), "embed": int_scheme(8, "seed:0.9999984"),
         "other": int_scheme(8, "seed:0.9999984")},
        small_first=True,
        control_patterns=SEED_CONTROL_PATTERNS,
    ),
    "int8": _uniform("int8", int_scheme(8)),
    "fp16": _uniform("fp16", FP16),
}
DEFAULT_POLICY = "int6-mixed"


def default_policy() -> Policy:
    return NAMED_POLICIES[DEFAULT_POLICY]


def parse_bits(text: str | None) -> dict[str, int]:
    """`attn=6,mlp=5,embed=7` -> {"attn": 6, ...}."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        category, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--bits {part!r}: expected CATEGORY=BITS such as attn=6; fix the option")
        result[category.strip()] = int(value)
    return result


def parse_bits_for(items: tuple[str, ...] | list[str]) -> list[tuple[str, int]]:
    """`REGEX=N` items (the last `=` splits, so regexes may contain `=`)."""
    rules = []
    for item in items:
        pattern, sep, value = item.rpartition("=")
        if not sep or not pattern or not value.strip().isdigit():
            raise InputError(f"--bits-for {item!r}: expected REGEX=BITS such as 'b\\.0\\.'=8; fix the option")
        rules.append((pattern, int(value)))
    return rules


def parse_clip(text: str | None) -> dict[str, str]:
    """`attn=std:12.5,embed=percentile` -> {"attn": "std:12.5", ...}."""
    result = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        category, sep, rule = part.partition("=")
        if not sep:
            raise InputError(f"--clip {part!r}: expected CATEGORY=RULE such as attn=std:12.5; fix the option")
        result[category.strip()] = rule.strip()
    return result


def resolve_policy(name: str = DEFAULT_POLICY, bits: str | None = None, bits_for: tuple[str, ...] = (),
                   clip: str | None = None) -> Policy:
    if name not in NAMED_POLICIES:
        raise InputError(f"--policy {name!r}: unknown policy; use one of {', '.join(NAMED_POLICIES)}")
    policy = NAMED_POLICIES[name]
    if clip:
        policy = policy.with_clip(parse_clip(clip))
    if bits:
        policy = policy.with_bits(parse_bits(bits))
    if bits_for:
        policy = policy.with_bits_for(parse_bits_for(bits_for))
    return policy
