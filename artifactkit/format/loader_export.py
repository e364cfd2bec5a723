"""Build the standalone `.akit` loader: one Python module, torch + numpy + the standard
library (plus `zstandard` / `brotli` only when those codecs are included), that defines
`load_artifact(path) -> dict[str, torch.Tensor]` and imports nothing from artifactkit.

Its bytes count against the budget when it is pasted into a training script, so the
codec set is a parameter: each codec adds one dictionary entry (and an import), and
`ans` adds the entropy decoder (`artifactkit.format.ans_decoder_src.DECODER_SOURCE`,
verbatim, standalone with its own imports). Every module is imported once: the loader's
own import lines leave out what the decoder source already imports (-45 bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from artifactkit.errors import InputError
from artifactkit.format import loader_template as template
from artifactkit.format.akit import ANS_SIDE_CODECS
from artifactkit.format.ans_decoder_src import DECODER_SOURCE

GENERAL_CODECS = tuple(template.CODEC_SOURCES)  # raw, zlib, lzma, zstd, brotli
ALL_CODECS = (*GENERAL_CODECS, "ans")
# Standard-library codecs plus the entropy coder: loads every artifact `pack` writes
# with its default codec, `--codec ans`, or `--codec auto` on a machine without zstd/brotli.
DEFAULT_CODECS = ("raw", "zlib", "lzma", "ans")


def parse_codecs(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`lzma,zstd` / `all` / None (the default set) -> a validated, ordered codec tuple."""
    if text is None:
        names = list(DEFAULT_CODECS)
    elif isinstance(text, str):
        names = [part.strip() for part in text.split(",") if part.strip()]
        if names == ["all"]:
            names = list(ALL_CODECS)
    else:
        names = list(text)
    unknown = [name for name in names if name not in ALL_CODECS]
    if unknown or not names:
        raise InputError(f"--codecs {text!r}: unknown or empty codec list; use 'all' or a comma list of "
                         f"{', '.join(ALL_CODECS)}")
    if "ans" in names:
        names.extend(ANS_SIDE_CODECS)
    names.append("raw")  # empty sections are stored as raw by every writer
    return tuple(name for name in ALL_CODECS if name in names)


def codecs_of_artifact(header: dict) -> tuple[str, ...]:
    """The codecs an artifact's sections actually use (what its loader needs)."""
    return parse_codecs([str(section["codec"]) for section in header["sections"]])


@dataclass(frozen=True)
class LoaderSource:
    text: str
    codecs: tuple[str, ...]
    lowrank: bool = False  # applies LQER corrections (reads format version 2)

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def third_party_modules(self) -> list[str]:
        """Modules beyond torch, numpy and the standard library that the loader imports."""
        return [module for codec, module in (("zstd", "zstandard"), ("brotli", "brotli")) if codec in self.codecs]


def imported_modules(source: str) -> set[str]:
    """Modules the leading `import a, b` / `import c as d` lines of `source` import."""
    found: set[str] = set()
    for line in source.splitlines():
        if not line.startswith("import "):
            break
        found |= {part.split(" as ")[0].strip() for part in line.removeprefix("import ").split(",")}
    return found


def import_lines(chosen: tuple[str, ...], provided: set[str]) -> str:
    """The loader's own imports: the body's modules and the codecs', less `provided`."""
    codec_modules = [template.CODEC_SOURCES[name][0] for name in chosen if name in template.CODEC_SOURCES]
    standard = sorted({*template.BODY_MODULES, *(m for m in codec_modules if m == "lzma")} - provided)
    third_party = sorted({m for m in codec_modules if m and m != "lzma"} - provided)
    lines = [f"import {', '.join(standard)}"] if standard else []
    lines += [] if "numpy" in provided else ["import numpy as np"]
    lines += ["import torch"] + [f"import {module}" for module in third_party]
    return "\n".join(lines) + "\n"


def build_loader(codecs: Iterable[str] | str | None = None, lowrank: bool = False) -> LoaderSource:
    """The loader's source text for these codecs (None: DEFAULT_CODECS); with `lowrank`,
    it also reads version-2 artifacts and applies their LQER corrections (+~0.9 KB)."""
    chosen = parse_codecs(codecs)
    general = [name for name in chosen if name in template.CODEC_SOURCES]
    decoder = DECODER_SOURCE if "ans" in chosen else ""
    parts = [template.DOCSTRING.replace("{codecs}", "; codecs " + ", ".join(chosen)),
             import_lines(chosen, imported_modules(decoder)), decoder]
    parts.append("\n" + template.RAW_TABLE)
    parts.append(template.VERSIONS_LOWRANK if lowrank else template.VERSIONS_PLAIN)
    parts.append(template.CONSTANTS)
    entries = ", ".join(f'"{name}": {template.CODEC_SOURCES[name][1]}' for name in general)
    parts.append(f"DECOMPRESS = {{{entries}}}\n")
    body = template.BODY.replace("{ans}", template.ANS_BRANCH if "ans" in chosen else "")
    body = body.replace("{lowrank_arrays}", template.LOWRANK_ARRAYS if lowrank else "")
    body = body.replace("{lowrank_branch}", template.LOWRANK_BRANCH if lowrank else "")
    parts.append("\n" + body)
    return LoaderSource("".join(parts), chosen, lowrank)


def loader_for_artifact(header: dict) -> LoaderSource:
    """The smallest loader that reads this artifact: its codecs, and LQER support if it uses it."""
    lowrank = any("lowrank" in tensor for tensor in header["tensors"])
    return build_loader(codecs_of_artifact(header), lowrank=lowrank)


def loader_sizes() -> dict[str, int]:
    """Bytes of the smallest (lzma only), default and full loaders: for --help and reports."""
    sizes = {"lzma": build_loader("lzma").size_bytes, "default": build_loader(None).size_bytes}
    return sizes
