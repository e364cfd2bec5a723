"""PNG figures for reports (matplotlib, Agg backend, written atomically). Sizes are in
MB, decimal (1 MB = 1,000,000 bytes), the same unit as the budget."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: the same output on a CI runner
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from artifactkit.io import atomic_write_bytes  # noqa: E402

if TYPE_CHECKING:
    from artifactkit.report.size import SizeReport

MB = 1e6
CATEGORY_COLORS = {"embed": "#4e79a7", "attn": "#f28e2b", "mlp": "#59a14f", "control": "#b07aa1",
                   "other": "#e15759", "overhead": "#9c9c9c", "code": "#76b7b2", "loader": "#edc948"}
HISTOGRAM_TENSORS = 4


def _color(name: str, index: int) -> str:
    return CATEGORY_COLORS.get(name, plt.get_cmap("tab10")(index % 10))


def save_figure(figure: plt.Figure, path: str | Path) -> Path:
    """Render to PNG in memory, then write atomically (never a half-written file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def _budget_bar(axis: plt.Axes, report: SizeReport) -> None:
    line = report.budget
    parts = [(c.category, c.bytes) for c in report.categories if c.bytes]
    parts += [("code", line.code_bytes), ("loader", line.loader_bytes)]
    bottom = 0.0
    for index, (name, size) in enumerate(parts):
        if not size:
            continue
        axis.bar([0], [size / MB], bottom=bottom, color=_color(name, index), width=0.5,
                 label=f"{name} {size / MB:.3f}")
        bottom += size / MB
    axis.axhline(line.budget / MB, color="#d62728", linestyle="--", linewidth=1.5)
    axis.text(-0.55, line.budget / MB, f"budget {line.budget / MB:.3f}", va="bottom", ha="left", color="#d62728")
    status = f"headroom {line.headroom / MB:.3f} MB" if line.ok else f"OVER by {-line.headroom / MB:.3f} MB"
    axis.set_title(f"Total {line.total_bytes / MB:.3f} MB of {line.budget / MB:.3f} MB: {status}")
    axis.set_ylabel("MB (decimal)")
    axis.set_xticks([0], [f"artifact + code\n(code rule: {line.code_rule})"])
    axis.set_xlim(-0.6, 1.6)
    axis.set_ylim(0, max(line.budget, line.total_bytes) / MB * 1.12)
    axis.legend(title="MB", loc="center right", fontsize=8)


def _per_layer(axis: plt.Axes, report: SizeReport) -> None:
    layers = report.layer_bytes()
    labels = list(layers)
    categories = [c.category for c in report.categories if any(c.category in v for v in layers.values())]
    bottom = np.zeros(len(labels))
    for index, category in enumerate(categories):
        values = np.array([layers[label].get(category, 0) / MB for label in labels])
        axis.bar(range(len(labels)), values, bottom=bottom, color=_color(category, index), label=category)
        bottom += values
    axis.set_xticks(range(len(labels)), [f"layer {x}" if x != "other" else "not in a layer" for x in labels],
                    rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center", fontsize=8)
    axis.set_ylabel("MB (decimal)")
    axis.set_title("Bytes per layer (attributed, compressed)")
    axis.set_ylim(0, max(bottom.max(initial=0.0), 1e-6) * 1.18)  # room for the legend above the bars
    axis.legend(fontsize=8, loc="upper center", ncol=max(1, len(categories)))


def _histograms(axis: plt.Axes, report: SizeReport) -> None:
    largest = sorted((t for t in report.tensors if t.name in report.histograms), key=lambda t: -t.params)
    largest = largest[:HISTOGRAM_TENSORS]
    if not largest:
        axis.text(0.5, 0.5, "no int-quantized tensors", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    codes = np.arange(-127, 128)
    widest = 0
    for index, tensor in enumerate(largest):
        counts = report.histograms[tensor.name]
        widest = max(widest, int(np.max(np.abs(codes[counts > 0]))) if counts.any() else 0)
        axis.step(codes, counts / max(1, counts.sum()), where="mid", color=plt.get_cmap("tab10")(index),
                  label=f"{tensor.name} ({tensor.scheme}, {tensor.params:,} params, "
                        f"entropy {tensor.entropy_bits:.2f} bits)")
    axis.set_xlim(-widest - 1, widest + 1)
    axis.set_yscale("log")
    axis.set_xlabel("quantized code")
    axis.set_ylabel("fraction of codes (log)")
    axis.set_title(f"Code histograms of the {len(largest)} largest int tensors")
    axis.legend(fontsize=8)


def size_report_figure(report: SizeReport, path: str | Path) -> Path:
    figure = plt.figure(figsize=(14, 10), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(1, 2.2), height_ratios=(1, 1))
    _budget_bar(figure.add_subplot(grid[0, 0]), report)
    _per_layer(figure.add_subplot(grid[0, 1]), report)
    _histograms(figure.add_subplot(grid[1, :]), report)
    figure.suptitle(f"{Path(report.source).name}: {report.artifact_bytes / MB:.3f} MB artifact "
                    f"(codec {report.codec}, policy {report.policy})")
    return save_figure(figure, path)


# Training loss is noisy step to step; the plot draws an exponential moving average over
# about this fraction of the logged points (at least 2), with the raw values faint behind.
SMOOTHING_FRACTION = 0.05


def smoothed(values: Sequence[float], span: int) -> np.ndarray:
    """Exponential moving average with span `span` (alpha = 2 / (span + 1)), bias-corrected
    at the start like TensorBoard's, so the first points are not pulled towards 0."""
    alpha = 2.0 / (max(1, span) + 1)
    out = np.empty(len(values))
    average, weight = 0.0, 0.0
    for index, value in enumerate(values):
        average = (1 - alpha) * average + alpha * float(value)
        weight = (1 - alpha) * weight + alpha
        out[index] = average / weight
    return out


def loss_span(points: int) -> int:
    return max(2, round(points * SMOOTHING_FRACTION))


def loss_curves_figure(series: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float],
                                               Sequence[float]]], path: str | Path, title: str) -> Path:
    """series: (label, train elapsed_s, train loss, val elapsed_s, val_bpb) per run."""
    figure, (loss_axis, bpb_axis) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    spans = []
    for index, (label, times, losses, val_times, val_bpb) in enumerate(series):
        color = plt.get_cmap("tab10")(index)
        span = loss_span(len(losses))
        spans.append(span)
        loss_axis.plot(times, losses, color=color, alpha=0.25, linewidth=0.8)
        loss_axis.plot(times, smoothed(losses, span), color=color, label=f"{label} (EMA, span {span} logged steps)",
                       linewidth=1.8)
        if val_times:
            bpb_axis.plot(val_times, val_bpb, color=color, marker="o", label=label)
    loss_axis.set_xlabel("wall clock (s)")
    loss_axis.set_ylabel("training loss (nats/token)")
    loss_axis.set_title("Training loss vs wall clock (smoothed; raw values faint)")
    loss_axis.legend()
    bpb_axis.set_xlabel("wall clock (s)")
    bpb_axis.set_ylabel("val_bpb (bits/byte)")
    bpb_axis.set_title("Validation bits per byte vs wall clock")
    # Share the wall-clock axis: a run validated only at its end is a point, not a zoomed-in blur.
    bpb_axis.set_xlim(loss_axis.get_xlim())
    if bpb_axis.lines:
        bpb_axis.legend()
    figure.suptitle(title)
    return save_figure(figure, path)
