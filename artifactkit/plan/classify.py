"""Classification: every tensor of an (expanded) state dict -> a category, with the
rule that decided it. Precedence: user rule by exact name > user regex > built-in table
> `other`. Large float tensors that fall through to `other` are the guard's business:
they are listed in `Classification.unclassified` and every command warns about them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from artifactkit.errors import InputError
from artifactkit.io import MAX_TEXT_FILE_BYTES, read_bounded
from artifactkit.plan.rules import SMALL_TENSOR_THRESHOLD, Rule, match_builtin, validate_category


def _toml_kind(value: object) -> str:
    """What a TOML value is, in TOML's words ("a number", "a table", ...)."""
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "an array"),
             (dict, "a table"))
    return next((word for kind, word in kinds if isinstance(value, kind)), "a date or time")


@dataclass(frozen=True)
class UserRules:
    """Rules from `--rules FILE.toml`:

        [exact]                      # exact tensor names (after bank expansion)
        "encoder.proj.weight" = "mlp"

        [[rule]]                     # regular expressions, first match wins
        regex = '\\.my_attn\\.'
        category = "attn"
        reason = "our attention block"
    """

    exact: dict[str, str] = field(default_factory=dict)
    regex: tuple[Rule, ...] = ()
    source: str = "<none>"

    @classmethod
    def load(cls, path: str | Path) -> UserRules:
        path = Path(path)
        fix = "see 'artifactkit classify --help' for the format"
        try:
            data = tomllib.loads(read_bounded(path, MAX_TEXT_FILE_BYTES, "a rules file").decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid TOML ({exc}); {fix}") from exc
        except RecursionError as exc:
            raise InputError(f"{path}: not a rules file (values nest deeper than TOML can be parsed); {fix}") from exc
        unknown = set(data) - {"exact", "rule"}
        if unknown:
            raise InputError(f"{path}: unknown section(s) {sorted(unknown)}; use [exact] and [[rule]]")
        exact_table = data.get("exact", {})
        if not isinstance(exact_table, dict):
            raise InputError(f"{path}: 'exact' is {_toml_kind(exact_table)}, not a table of "
                             '"tensor name" = "category" lines; write it as [exact] followed by those lines')
        exact = {}
        for name, category in exact_table.items():
            if not isinstance(category, str):
                raise InputError(f"{path} [exact] {name}: the category is {_toml_kind(category)}, not a string; "
                                 'write "NAME" = "attn" (or another category in quotes)')
            exact[str(name)] = validate_category(category, f"{path} [exact] {name}")
        rule_list = data.get("rule", [])
        if not isinstance(rule_list, list):
            raise InputError(f"{path}: 'rule' is {_toml_kind(rule_list)}, not an array of tables; write each rule "
                             "as a [[rule]] block with regex = '...' and category = '...'")
        regex_rules = []
        for index, entry in enumerate(rule_list):
            where = f"{path} [[rule]] #{index + 1}"
            if not isinstance(entry, dict) or "regex" not in entry or "category" not in entry:
                raise InputError(f"{where}: each [[rule]] needs 'regex' and 'category'; add the missing key")
            wrong = [key for key in ("regex", "category", "reason") if key in entry and not isinstance(entry[key], str)]
            if wrong:
                raise InputError(f"{where}: '{wrong[0]}' is {_toml_kind(entry[wrong[0]])}, not a string; "
                                 "put it in quotes")
            try:
                re.compile(entry["regex"])
            except (re.error, RecursionError, OverflowError) as exc:
                raise InputError(f"{where}: bad regular expression {entry['regex'][:80]!r} ({exc}); "
                                 "fix the pattern") from exc
            regex_rules.append(Rule(entry["regex"], validate_category(entry["category"], where),
                                    str(entry.get("reason", f"user rule from {path.name}"))))
        return cls(exact=exact, regex=tuple(regex_rules), source=str(path))


@dataclass(frozen=True)
class TensorClass:
    name: str
    category: str
    reason: str  # which rule decided, in words
    source: str  # "user-exact" | "user-regex" | "builtin" | "fallback"
    shape: tuple[int, ...]
    dtype: str
    numel: int

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float32", "float16", "bfloat16", "float64")


@dataclass
class Classification:
    tensors: list[TensorClass]
    threshold: int = SMALL_TENSOR_THRESHOLD

    @property
    def unclassified(self) -> list[str]:
        """Large float tensors that matched no rule: the guard against silent fallback."""
        return [t.name for t in self.tensors if t.category == "other" and t.is_float and t.numel > self.threshold]

    def by_name(self) -> dict[str, TensorClass]:
        return {t.name: t for t in self.tensors}

    def guard_message(self) -> str | None:
        names = self.unclassified
        if not names:
            return None
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return (
            f"{len(names)} float tensor(s) above {self.threshold:,} elements matched no rule and fell to 'other' "
            f"({shown}); add a rule with --rules FILE.toml (see 'artifactkit classify --help')"
        )


def classify_name(name: str, user_rules: UserRules | None = None) -> tuple[str, str, str]:
    """(category, reason, source) for one tensor name."""
    if user_rules is not None:
        if name in user_rules.exact:
            return user_rules.exact[name], f"exact name in {user_rules.source}", "user-exact"
        for rule in user_rules.regex:
            if rule.compiled().search(name):
                return rule.category, rule.reason, "user-regex"
    rule = match_builtin(name)
    if rule is not None:
        return rule.category, rule.reason, "builtin"
    return "other", "no rule matched", "fallback"


def classify_state_dict(state_dict: Mapping[str, torch.Tensor], user_rules: UserRules | None = None,
                        threshold: int = SMALL_TENSOR_THRESHOLD) -> Classification:
    """Classify an already bank-expanded state dict."""
    entries = []
    for name, tensor in state_dict.items():
        category, reason, source = classify_name(name, user_rules)
        entries.append(TensorClass(name, category, reason, source, tuple(tensor.shape),
                                   str(tensor.dtype).removeprefix("torch."), tensor.numel()))
    return Classification(entries, threshold)
