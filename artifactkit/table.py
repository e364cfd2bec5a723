"""Aligned plain-text tables for human output (numbers right-aligned, with totals)."""

from __future__ import annotations

from collections.abc import Sequence


def fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render(headers: Sequence[str], rows: Sequence[Sequence[object]], total: Sequence[object] | None = None) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    if total is not None:
        cells.append(["" if c is None else str(c) for c in total])
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def numeric(text: str) -> bool:
        stripped = text.replace(",", "").replace(".", "").replace("-", "").replace("%", "")
        return stripped.isdigit()

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1 : len(cells) - (1 if total is not None else 0)]]
    if total is not None:
        out += ["  ".join("-" * w for w in widths), line(cells[-1])]
    return "\n".join(out)
