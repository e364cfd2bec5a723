"""Clip rules as data: how each row's clip magnitude (the value that maps to the
largest code) is chosen. A rule is a frozen dataclass that serialises to a short string,
so a policy and the artifact header can name it; `artifactkit.quantize.intn` applies it.

| string                   | meaning                                                         |
|--------------------------|-----------------------------------------------------------------|
| `percentile`             | per row, the MSE-best of the percentiles 0.999, 0.9995, 0.9999,  |
|                          | 0.99999, 1.0 of abs(w) (the seed's candidates, chosen per row)  |
| `percentile:0.9999984`   | a fixed per-row percentile of abs(w) (public baseline's int8)   |
| `std:12.5`               | k times the row's standard deviation (SDClip)                   |
| `mse`                    | per row, the MSE-best of k*std for 20 k from 2 to 20, or max    |
| `seed`                   | the seed's int6 rule exactly: ONE of those percentiles per       |
|                          | tensor (row-wise quantiles), by whole-tensor MSE; scale floored  |
|                          | at 1/levels                                                      |
| `seed:0.9999984`         | the seed's int8 rule exactly: that per-row percentile, weights   |
|                          | clamped to it, scale floored at 1/levels                         |

`percentile` is our refinement of the seed's search (the best percentile per row, no
floor); `seed` reproduces the seed's packer for `--policy seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from artifactkit.errors import InputError

SEED_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
# 20 multiples from 2 to 20, as float32 values (the exact candidates earlier artifacts used)
MSE_STD_MULTIPLES = tuple(float(k) for k in torch.linspace(2.0, 20.0, 20).tolist())

RULE_KINDS = {
    "percentile": "without a value: per-row MSE-best of the seed percentiles; with q in (0, 1]: that percentile",
    "std": "k > 0: clip at k times the row's standard deviation",
    "mse": "no value: per-row MSE-best of k*std (k = 2..20, 20 values) and max|w|",
    "seed": "no value: the seed's int6 rule (one percentile per tensor, scale >= 1/levels); "
            "with q in (0, 1]: the seed's int8 rule (that percentile, weights clamped, scale >= 1/levels)",
}
RULE_SYNTAX = "use 'percentile', 'percentile:Q' with 0 < Q <= 1, 'std:K' with K > 0, 'mse', 'seed' or 'seed:Q'"


@dataclass(frozen=True)
class ClipRule:
    """How each row's clip magnitude is chosen. `value` is the percentile q or the std
    multiple k; None for the searching rules (`percentile` without q, `mse`)."""

    kind: str
    value: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, (int, float)) and not isinstance(self.value, bool):
            object.__setattr__(self, "value", float(self.value))
        if self.kind not in RULE_KINDS:
            raise InputError(f"clip rule {self!s}: unknown kind {self.kind!r}; {RULE_SYNTAX}")
        if self.kind == "mse" and self.value is not None:
            raise InputError(f"clip rule {self!s}: 'mse' takes no value; {RULE_SYNTAX}")
        if self.kind == "std" and (self.value is None or not self.value > 0 or self.value == float("inf")):
            raise InputError(f"clip rule {self!s}: std multiple must be a finite number > 0; {RULE_SYNTAX}")
        if self.kind in ("percentile", "seed") and self.value is not None and not 0.0 < self.value <= 1.0:
            raise InputError(f"clip rule {self!s}: percentile must lie in (0, 1]; {RULE_SYNTAX}")

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value!r}"

    def to_string(self) -> str:
        """The short form `parse_clip_rule` reads back."""
        return str(self)


def parse_clip_rule(text: str) -> ClipRule:
    """`"percentile"`, `"percentile:0.9999984"`, `"std:12.5"`, `"mse"` -> ClipRule."""
    kind, sep, raw_value = text.strip().partition(":")
    kind = kind.strip().lower()
    if not sep:
        return ClipRule(kind)
    try:
        value = float(raw_value)
    except ValueError:
        raise InputError(f"clip rule {text!r}: {raw_value!r} is not a number; {RULE_SYNTAX}") from None
    return ClipRule(kind, value)
