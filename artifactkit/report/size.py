"""Where an artifact's bytes go: per category and per tensor (measured, not guessed),
codec comparison, what-if bit widths, and the budget line. Commands print it; plots
draw it (`artifactkit.report.plots`).

Attribution (how `bytes` is measured). Each section of the payload (codes, scales,
half, fp32, raw) is stored with one codec. For every category we compress that
category's part of the section alone, with the same codec, and subtract the codec's
empty-stream container cost; the section's real stored bytes are then split among
categories in proportion to those standalone sizes (largest-remainder rounding, so
the split is exact). A category's bytes are split among its tensors the same way.
Preamble and header are the `overhead` pseudo-category. Hence categories (overhead
included) add up to `artifact_bytes` exactly, and tensors add up to their category.
`standalone_bytes` is what a category's sections compress to on their own.

What-if (needs the float weights, i.e. a checkpoint): for category C at N bits, C's
int tensors are re-quantized under `policy.with_bits({C: N})` and
`total = artifact_bytes - standalone(C now) + standalone(C at N)` with the same
section codecs; the `all` rows apply the three categories' changes together.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifactkit.budget import RULE_TEXT, BudgetLine, CodeAccount
from artifactkit.errors import InputError
from artifactkit.format import codecs as codec_registry
from artifactkit.format.akit import encode_artifact, encode_section, section_streams
from artifactkit.format.reader import ArtifactReader
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.schemes import SECTIONS, section_bytes
from artifactkit.quantize.apply import QuantEntry, QuantizedModel
from artifactkit.quantize.intn import quantize

OVERHEAD = "overhead"
WHAT_IF_CATEGORIES = ("attn", "mlp", "embed")
WHAT_IF_BITS = (5, 6, 7, 8)
ALL_CATEGORIES = "attn+mlp+embed"
COMPARED_CODECS = ("lzma", "zstd", "zlib", "brotli", "ans", "raw")
ATTRIBUTION_RULE = ("each section's stored bytes split by what each category's part compresses to alone "
                    "(same codec); header + preamble reported as 'overhead'")
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:b|blocks|layers|h|layer)\.(\d+)\.")


# --------------------------------------------------------------------------- results


@dataclass
class TensorSize:
    name: str
    category: str
    scheme: str
    bits: int | None
    params: int
    raw_bytes: int
    bytes: int
    entropy_bits: float | None  # empirical entropy of the int codes, bits per parameter

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "scheme": self.scheme, "bits": self.bits,
                "params": self.params, "raw_bytes": self.raw_bytes, "bytes": self.bytes,
                "entropy_bits": self.entropy_bits}


@dataclass
class CategorySize:
    category: str
    params: int
    raw_bytes: int
    bytes: int
    standalone_bytes: int
    schemes: list[str]
    entropy_bits: float | None

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "params": self.params, "bytes": self.bytes, "raw_bytes": self.raw_bytes,
                "standalone_bytes": self.standalone_bytes, "schemes": self.schemes,
                "entropy_bits": self.entropy_bits}


@dataclass
class CodecResult:
    codec: str
    bytes: int
    compress_s: float
    decompress_s: float

    def to_json(self) -> dict[str, Any]:
        return {"codec": self.codec, "bytes": self.bytes, "compress_s": round(self.compress_s, 4),
                "decompress_s": round(self.decompress_s, 4)}


@dataclass
class WhatIf:
    category: str
    bits: int
    model_bytes: int
    total_bytes: int
    fits: bool
    current: bool

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "bits": self.bits, "total_bytes": self.total_bytes, "fits": self.fits,
                "model_bytes": self.model_bytes, "current": self.current}


@dataclass
class SizeReport:
    source: str
    source_kind: str  # "artifact" | "checkpoint (packed in memory)"
    artifact_bytes: int
    codec: str
    policy: str
    categories: list[CategorySize]
    tensors: list[TensorSize]
    codecs: list[CodecResult]
    what_if: list[WhatIf]
    budget: BudgetLine
    code: CodeAccount
    uncounted_files: list[tuple[str, int]]
    loader_hint_bytes: int  # size of the loader exported for this artifact's codecs
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # int tensor -> counts of codes -127..127
    notices: list[str] = field(default_factory=list)

    def layer_bytes(self) -> dict[str, dict[str, int]]:
        """{layer label: {category: bytes}}; tensors outside numbered blocks go under 'other'."""
        layers: dict[str, dict[str, int]] = {}
        for tensor in self.tensors:
            match = LAYER_PATTERN.search(tensor.name)
            label = f"{int(match.group(1))}" if match else "other"
            layers.setdefault(label, Counter())[tensor.category] += tensor.bytes
        numbered = sorted((k for k in layers if k != "other"), key=int)
        return {k: dict(layers[k]) for k in numbered + (["other"] if "other" in layers else [])}

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "artifact_bytes": self.artifact_bytes,
            "codec": self.codec,
            "policy": self.policy,
            "attribution": ATTRIBUTION_RULE,
            "categories": [c.to_json() for c in self.categories],
            "tensors": [t.to_json() for t in self.tensors],
            "codecs": [c.to_json() for c in self.codecs],
            "what_if": [w.to_json() for w in self.what_if],
            "budget": self.budget.to_json(),
            "code_files": [{"path": f.path, "raw_bytes": f.raw_bytes, "compressed_bytes": f.compressed_bytes,
                            "compressed_method": f.compressed_method} for f in self.code.files],
            "code_rule_text": RULE_TEXT[self.budget.code_rule],
            "uncounted_files": [{"path": p, "bytes": b} for p, b in self.uncounted_files],
            "loader_export_bytes": self.loader_hint_bytes,
            "notices": self.notices,
        }


# --------------------------------------------------------------------------- measuring


def raw_bytes_of(entry: QuantEntry) -> int:
    """Uncompressed bytes the entry occupies in its sections (the schemes table)."""
    return sum(_sections_of(entry).values())


def code_histogram(entry: QuantEntry) -> np.ndarray:
    """Counts of codes -127..127 (index 0 = -127)."""
    codes = entry.quantized.codes.numpy().reshape(-1).astype(np.int16)
    return np.bincount(codes + 127, minlength=255)[:255]


def entropy_bits(histogram: np.ndarray) -> float | None:
    total = int(histogram.sum())
    if total == 0:
        return None
    p = histogram[histogram > 0] / total
    return float(-(p * np.log2(p)).sum())


class SectionMeter:
    """Compresses parts of a model's sections with the codecs the artifact used, memoised
    by the group of entries, and reports the bytes beyond the codec's empty-stream cost."""

    def __init__(self, section_codecs: Mapping[str, str]) -> None:
        self.section_codecs = dict(section_codecs)
        self._empty: dict[str, int] = {}

    def empty_cost(self, codec: str) -> int:
        if codec not in self._empty:
            self._empty[codec] = len(codec_registry.compress(codec, b"")) if codec in codec_registry.CODECS else 0
        return self._empty[codec]

    def measure(self, entries: Sequence[QuantEntry], model: QuantizedModel) -> dict[str, int]:
        """{section: bytes} of these entries' parts, compressed alone (container cost removed)."""
        group = QuantizedModel(list(entries), [], [], model.policy, model.classification, {})
        streams = section_streams(group)
        result = {}
        for name in SECTIONS:
            codec = self.section_codecs.get(name, "raw")
            if not streams[name]:
                result[name] = 0
                continue
            used, stored = encode_section(name, streams[name], codec, group)
            result[name] = max(1, len(stored) - self.empty_cost(used))
        return result


def split_exactly(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to `weights` that add up to `total` (largest remainder)."""
    if not weights:
        return []
    weight_sum = float(sum(weights))
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    exact = [total * w / weight_sum for w in weights]
    floors = [math.floor(x) for x in exact]
    remainder = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: exact[i] - floors[i], reverse=True)
    for index in order[:remainder]:
        floors[index] += 1
    return floors


def attribute(model: QuantizedModel, stored: Mapping[str, int], meter: SectionMeter,
              progress: Callable[[str], None] | None = None) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(category bytes, tensor bytes, category standalone bytes) for the payload sections."""
    by_category: dict[str, list[QuantEntry]] = {}
    for entry in model.entries:
        by_category.setdefault(entry.category, []).append(entry)
    names = list(by_category)
    standalone = {}
    for category in names:
        if progress:
            progress(f"measuring {category}")
        standalone[category] = meter.measure(by_category[category], model)
    category_bytes = dict.fromkeys(names, 0)
    tensor_bytes = {e.name: 0 for e in model.entries}
    alone: dict[str, dict[str, int]] = {}

    def tensor_alone(entry: QuantEntry) -> dict[str, int]:
        if entry.name not in alone:
            alone[entry.name] = meter.measure([entry], model)
        return alone[entry.name]

    for section in SECTIONS:
        present = [c for c in names if standalone[c][section] > 0]
        shares = split_exactly(stored.get(section, 0), [standalone[c][section] for c in present])
        for category, share in zip(present, shares, strict=True):
            category_bytes[category] += share
            members = [e for e in by_category[category] if raw_bytes_of(e) and _in_section(e, section)]
            if len(members) == 1:
                tensor_bytes[members[0].name] += share
                continue
            weights = [tensor_alone(e)[section] for e in members]
            for entry, part in zip(members, split_exactly(share, weights), strict=True):
                tensor_bytes[entry.name] += part
    return category_bytes, tensor_bytes, {c: sum(s.values()) for c, s in standalone.items()}


def _sections_of(entry: QuantEntry) -> dict[str, int]:
    lowrank = entry.lowrank.header_json() if entry.lowrank is not None else None
    return section_bytes(entry.scheme.kind, entry.shape, entry.dtype, lowrank)


def _in_section(entry: QuantEntry, section: str) -> bool:
    return section in _sections_of(entry)


def compare_codecs(model: QuantizedModel, names: Iterable[str],
                   progress: Callable[[str], None] | None = None) -> list[CodecResult]:
    """Encode the same model with each codec (a full artifact) and decode every section back."""
    results = []
    for name in names:
        if progress:
            progress(f"codec {name}")
        start = time.perf_counter()
        data = encode_artifact(model, name).data
        middle = time.perf_counter()
        reader = ArtifactReader(data, f"<{name}>")
        for section in reader.section_spans:
            reader.section(section)
        results.append(CodecResult(name, len(data), middle - start, time.perf_counter() - middle))
    return results


def what_if(model: QuantizedModel, expanded: Mapping[str, torch.Tensor], meter: SectionMeter,
            artifact_bytes: int, other_bytes: int, budget: int,
            categories: Sequence[str] = WHAT_IF_CATEGORIES, bit_widths: Sequence[int] = WHAT_IF_BITS,
            progress: Callable[[str], None] | None = None,
            measured: Mapping[str, int] | None = None) -> list[WhatIf]:
    """Totals (model + code + loader) with one category re-quantized to each width.
    `measured` holds each category's standalone bytes when already known (from `attribute`)."""
    rows = []
    deltas: dict[int, int] = dict.fromkeys(bit_widths, 0)
    changed_any: dict[int, bool] = dict.fromkeys(bit_widths, False)
    for category in categories:
        current = [e for e in model.entries if e.category == category]
        if not any(e.scheme.is_int for e in current):
            continue
        before = (measured or {}).get(category)
        if before is None:
            before = sum(meter.measure(current, model).values())
        for bits in bit_widths:
            policy = model.policy.with_bits({category: bits})
            changed = []
            for entry in current:
                scheme, _ = policy.scheme_for(entry.name, category, expanded[entry.name])
                if scheme == entry.scheme or not scheme.is_int:
                    changed.append(entry)
                    continue
                if progress:
                    progress(f"what-if {entry.name} int{bits}")
                requantized = quantize(expanded[entry.name].detach().cpu(), int(scheme.bits), str(scheme.clip))
                changed.append(replace(entry, scheme=scheme, quantized=requantized))
            is_current = all(a is b for a, b in zip(changed, current, strict=True))
            delta = 0 if is_current else sum(meter.measure(changed, model).values()) - before
            deltas[bits] += delta
            changed_any[bits] |= not is_current
            model_bytes = artifact_bytes + delta
            rows.append(WhatIf(category, bits, model_bytes, model_bytes + other_bytes,
                               model_bytes + other_bytes <= budget, is_current))
    if len({r.category for r in rows}) > 1:
        for bits in bit_widths:
            model_bytes = artifact_bytes + deltas[bits]
            rows.append(WhatIf(ALL_CATEGORIES, bits, model_bytes, model_bytes + other_bytes,
                               model_bytes + other_bytes <= budget, not changed_any[bits]))
    return rows


# --------------------------------------------------------------------------- the report


def uncounted_files(code_paths: Sequence[str | Path]) -> list[tuple[str, int]]:
    """Files beside the first code file that are not counted (a tokenizer model, data, ...)."""
    if not code_paths:
        return []
    counted = {Path(p).resolve() for p in code_paths}
    folder = Path(code_paths[0]).resolve().parent
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.resolve() not in counted:
            found.append((str(Path(code_paths[0]).parent / path.name), path.stat().st_size))
    return found


def parse_codec_list(text: str | None) -> list[str]:
    """`all` (the default) / `none` / `lzma,zstd` -> codecs to compare (unavailable ones dropped)."""
    available = set(codec_registry.available_codecs()) | {"ans"}
    if text is None or text.strip() == "all":
        return [c for c in COMPARED_CODECS if c in available]
    if text.strip() == "none":
        return []
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in COMPARED_CODECS]
    if unknown or not names:
        raise InputError(f"--codecs {text!r}: unknown codec {', '.join(unknown) or '(empty)'}; use all, none or a "
                         f"comma list of {', '.join(COMPARED_CODECS)}")
    missing = [n for n in names if n not in available]
    if missing:
        raise InputError(f"--codecs {text!r}: {', '.join(missing)} is not installed here; pip install "
                         "'artifactkit[brotli]' or leave it out")
    return names


def build_report(reader: ArtifactReader, source: str, source_kind: str, code: CodeAccount, code_rule: str,
                 budget: int, loader_bytes: int, loader_hint_bytes: int, compare: Sequence[str],
                 model: QuantizedModel | None = None, float_state: Mapping[str, torch.Tensor] | None = None,
                 code_paths: Sequence[str | Path] = (), progress: Callable[[str], None] | None = None) -> SizeReport:
    """Measure everything about one artifact. `model` (the in-memory QuantizedModel) and
    `float_state` (the checkpoint's state dict) are given when packing a checkpoint;
    without `float_state` there is no what-if table."""
    model = model or reader.quantized_model()
    stored = {name: span[1] for name, span in reader.section_spans.items()}
    section_codecs = {name: span[2] for name, span in reader.section_spans.items()}
    meter = SectionMeter(section_codecs)
    category_bytes, tensor_bytes, standalone = attribute(model, stored, meter, progress)
    overhead = reader.artifact_bytes - sum(stored.values())

    histograms = {e.name: code_histogram(e) for e in model.entries if e.scheme.is_int}
    tensors = [TensorSize(e.name, e.category, e.scheme.label, e.scheme.stored_bits, e.numel, raw_bytes_of(e),
                          tensor_bytes[e.name], entropy_bits(histograms[e.name]) if e.name in histograms else None)
               for e in model.entries]
    categories = []
    for category in category_bytes:
        members = [e for e in model.entries if e.category == category]
        pooled = [histograms[e.name] for e in members if e.name in histograms]
        categories.append(CategorySize(
            category, sum(e.numel for e in members), sum(raw_bytes_of(e) for e in members),
            category_bytes[category], standalone[category], sorted({e.scheme.label for e in members}),
            entropy_bits(np.sum(pooled, axis=0)) if pooled else None))
    categories.sort(key=lambda c: -c.bytes)
    categories.append(CategorySize(OVERHEAD, 0, overhead, overhead, overhead, ["header"], None))

    line = BudgetLine(budget, reader.artifact_bytes, code.bytes_for(code_rule), loader_bytes, code_rule)
    other_bytes = line.code_bytes + line.loader_bytes
    notices = []
    rows: list[WhatIf] = []
    if float_state is not None:
        expanded, _ = expand_banks(float_state)
        rows = what_if(model, expanded, meter, reader.artifact_bytes, other_bytes, budget, progress=progress,
                       measured=standalone)
        for category in WHAT_IF_CATEGORIES:
            if category not in {r.category for r in rows}:
                notices.append(f"notice: {source}: no what-if rows for {category}: it has no int-quantized tensors "
                               f"(e.g. all of them are small, <= {model.policy.small_threshold:,} elements, and stay fp16)")
    elif source_kind == "artifact":
        notices.append(f"notice: {source}: no what-if table for an artifact (it needs the float weights); "
                       "pass the checkpoint to size-report instead")
    codec_rows = compare_codecs(model, compare, progress) if compare else []
    files = uncounted_files(code_paths)
    for path, size in files:
        notices.append(f"notice: {path} ({size:,} bytes) is in the submission folder but not counted; "
                       "add --code for it if the submission ships it")
    return SizeReport(source, source_kind, reader.artifact_bytes, reader.codec, reader.policy_name, categories,
                      tensors, codec_rows, rows, line, code, files, loader_hint_bytes, histograms, notices)


# --------------------------------------------------------------------------- text and markdown


def _mb(value: int) -> str:
    return f"{value / 1e6:.3f}"


def report_tables(report: SizeReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of every table, shared by the text and markdown renderings."""
    def entropy(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    total = report.artifact_bytes
    tables = [
        ("Bytes by category (" + ATTRIBUTION_RULE + ")",
         ["category", "schemes", "params", "raw bytes", "bytes", "share", "alone", "entropy bits/param"],
         [[c.category, ",".join(c.schemes), f"{c.params:,}", f"{c.raw_bytes:,}", f"{c.bytes:,}",
           f"{100 * c.bytes / total:.1f}%", f"{c.standalone_bytes:,}", entropy(c.entropy_bits)]
          for c in report.categories]),
        ("Bytes by tensor",
         ["tensor", "category", "scheme", "params", "raw bytes", "bytes", "bits/param", "entropy bits/param"],
         [[t.name, t.category, t.scheme, f"{t.params:,}", f"{t.raw_bytes:,}", f"{t.bytes:,}",
           f"{8 * t.bytes / t.params:.3f}" if t.params else "-", entropy(t.entropy_bits)]
          for t in sorted(report.tensors, key=lambda t: -t.bytes)]),
    ]
    if report.codecs:
        tables.append(("Codecs (the whole artifact encoded with each; decode = every section)",
                       ["codec", "bytes", "vs current", "compress s", "decompress s"],
                       [[c.codec, f"{c.bytes:,}", f"{c.bytes - total:+,}", f"{c.compress_s:.3f}",
                         f"{c.decompress_s:.3f}"] for c in report.codecs]))
    if report.what_if:
        categories = list(dict.fromkeys(w.category for w in report.what_if))
        cells = {(w.category, w.bits): w for w in report.what_if}
        rows = []
        for bits in sorted({w.bits for w in report.what_if}):
            row = [f"int{bits}"]
            for category in categories:
                cell = cells.get((category, bits))
                row.append("-" if cell is None else
                           f"{cell.total_bytes:,} {'fits' if cell.fits else 'OVER'}{' (now)' if cell.current else ''}")
            rows.append(row)
        tables.append((f"What-if: total bytes (model + code + loader) against the budget of "
                       f"{report.budget.budget:,} with one category at each width", ["width", *categories], rows))
    line = report.budget
    tables.append(("Budget", ["model", "code", "loader", "total", "budget", "headroom", "code rule"],
                   [[f"{line.model_bytes:,}", f"{line.code_bytes:,}", f"{line.loader_bytes:,}",
                     f"{line.total_bytes:,}", f"{line.budget:,}", f"{line.headroom:,}", RULE_TEXT[line.code_rule]]]))
    if report.code.files:
        tables.append(("Code files", ["file", "raw UTF-8 bytes", "self-extracting bytes", "method"],
                       [[f.path, f"{f.raw_bytes:,}", f"{f.compressed_bytes:,}", f.compressed_method]
                        for f in report.code.files]
                       + [["total", f"{report.code.raw_bytes:,}", f"{report.code.compressed_bytes:,}", ""]]))
    return tables


def summary_line(report: SizeReport) -> str:
    line = report.budget
    status = "fits" if line.ok else f"OVER by {-line.headroom:,} bytes"
    return (f"{report.source} ({report.source_kind}): artifact {report.artifact_bytes:,} bytes "
            f"({_mb(report.artifact_bytes)} MB), codec {report.codec}, policy {report.policy}; total "
            f"{line.total_bytes:,} of {line.budget:,} -> {status} [code rule: {RULE_TEXT[line.code_rule]}]; "
            f"a loader exported for this artifact is {report.loader_hint_bytes:,} bytes")


def render_markdown(report: SizeReport, plot_name: str | None = None) -> str:
    out = [f"# Size report: {Path(report.source).name}", "", summary_line(report), ""]
    if plot_name:
        out += [f"![bytes by category, per layer, code histograms]({plot_name})", ""]
    for title, headers, rows in report_tables(report):
        numeric = [bool(rows) and all(re.fullmatch(r"[-+]?[\d,.]+%?( \w.*)?|-", row[i]) for row in rows)
                   for i in range(len(headers))]
        out += [f"## {title}", "", "| " + " | ".join(headers) + " |",
                "|" + "".join("---:|" if right else "---|" for right in numeric)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        out.append("")
    if report.notices:
        out += ["## Notices", ""] + [f"- {n}" for n in report.notices] + [""]
    return "\n".join(out)
