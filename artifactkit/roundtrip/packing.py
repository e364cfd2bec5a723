"""Pack a loaded checkpoint exactly as `artifactkit pack` writes it: the same policy,
codec, user rules and `meta` block (arch, config, step, tokenizer sha256, source kind),
so `size-report` and `roundtrip-eval`, which pack in memory, measure the very bytes
`pack` and `check` see.

It also keeps the policy's label honest: `--bits attn=6` applies to matrices above the
small-tensor threshold; when some matrices of an overridden category are at or below it
(and so stay fp16), the label says so and a notice counts them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from artifactkit.checkpoint import LoadedCheckpoint
from artifactkit.format.akit import DEFAULT_CODEC, PackedArtifact, encode_artifact
from artifactkit.plan.classify import UserRules
from artifactkit.plan.policy import Policy, default_policy
from artifactkit.plan.schemes import SchemeKind
from artifactkit.quantize.apply import QuantizedModel, quantize_state_dict


@dataclass
class PackedCheckpoint:
    packed: PackedArtifact
    notices: list[str] = field(default_factory=list)


def checkpoint_meta(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """The `meta` block `pack` writes into the header (None values are left out)."""
    return {"arch": checkpoint.arch, "config": checkpoint.config, "step": checkpoint.step,
            "tokenizer_sha256": checkpoint.tokenizer_sha256, "source_kind": checkpoint.kind}


def small_matrices_kept_fp16(model: QuantizedModel, categories: set[str]) -> Counter[str]:
    """Per category in `categories`: matrices (>= 2-D floats) that stayed fp16 because
    they are at or below the small-tensor threshold."""
    found: Counter[str] = Counter()
    for entry in model.entries:
        if (entry.category in categories and entry.scheme.kind is SchemeKind.FP16 and len(entry.shape) >= 2
                and entry.numel <= model.policy.small_threshold):
            found[entry.category] += 1
    return found


def honest_policy(model: QuantizedModel, bits_overrides: Mapping[str, int]) -> tuple[QuantizedModel, list[str]]:
    """The model with a policy label that does not claim more than `--bits` did, and
    the notice that explains it (nothing changes when no matrix is affected)."""
    kept = small_matrices_kept_fp16(model, set(bits_overrides))
    if not kept:
        return model, []
    total = sum(kept.values())
    threshold = model.policy.small_threshold
    per_category = ", ".join(f"{count:,} {category}" for category, count in sorted(kept.items()))
    overrides = ",".join(f"{c}={b}" for c, b in bits_overrides.items())
    notice = (f"notice: --bits {overrides} applies to matrices above the small-tensor threshold ({threshold:,} "
              f"elements); {total:,} smaller matrices ({per_category}) stay fp16 as the policy keeps small tensors; "
              "force them with --bits-for REGEX=N")
    label = f"{model.policy.name} (matrices > {threshold:,} elements; {total:,} smaller fp16)"
    return replace(model, policy=replace(model.policy, name=label)), [notice]


def pack_checkpoint(checkpoint: LoadedCheckpoint, policy: Policy | None = None, codec: str = DEFAULT_CODEC,
                    user_rules: UserRules | None = None,
                    bits_overrides: Mapping[str, int] | None = None) -> PackedCheckpoint:
    """Quantize and encode `checkpoint` in memory: byte for byte what `pack` writes
    with the same options. `bits_overrides` are the `--bits` categories (for the label)."""
    model = quantize_state_dict(checkpoint.state_dict, policy or default_policy(), user_rules,
                                checkpoint_meta(checkpoint))
    model, notices = honest_policy(model, bits_overrides or {})
    return PackedCheckpoint(encode_artifact(model, codec), notices)
