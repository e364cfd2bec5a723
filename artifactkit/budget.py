"""The budget arithmetic: total = artifact bytes + code bytes (+ loader bytes when the
standalone loader is pasted into the training script), against 16,000,000 bytes
(decimal). Code bytes are counted by a named rule, and every report states it:

* `raw`: the UTF-8 bytes of every counted file, as shipped (the challenge's rule);
* `compressed`: for each file, the smallest self-extracting Python form we can build
  (`exec(lzma/zlib.decompress(base64.b85decode(...)))`), or the raw file when smaller.
"""

from __future__ import annotations

import base64
import lzma
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from artifactkit.errors import InputError
from artifactkit.io import MAX_TEXT_FILE_BYTES, read_bounded

DEFAULT_BUDGET = 16_000_000
CODE_RULES = ("raw", "compressed")
RULE_TEXT = {
    "raw": "raw: UTF-8 bytes of each counted file as shipped",
    "compressed": "compressed: smallest self-extracting form per file (lzma/zlib + base85 wrapper) or raw if smaller",
}


def self_extracting_size(source: bytes) -> tuple[int, str]:
    """(bytes, method) of the smallest `exec(...decompress(b85decode(...)))` wrapper."""
    candidates = []
    for module, blob in (("lzma", lzma.compress(source, preset=9 | lzma.PRESET_EXTREME)),
                         ("zlib", zlib.compress(source, 9))):
        wrapper = (f"import {module},base64\nexec({module}.decompress(base64.b85decode("
                   f"{base64.b85encode(blob).decode()!r})))\n")
        candidates.append((len(wrapper.encode()), f"{module}+base85"))
    return min(candidates)


@dataclass
class CodeFile:
    path: str
    raw_bytes: int
    compressed_bytes: int
    compressed_method: str


@dataclass
class CodeAccount:
    files: list[CodeFile] = field(default_factory=list)

    @property
    def raw_bytes(self) -> int:
        return sum(f.raw_bytes for f in self.files)

    @property
    def compressed_bytes(self) -> int:
        return sum(min(f.raw_bytes, f.compressed_bytes) for f in self.files)

    def bytes_for(self, rule: str) -> int:
        return self.raw_bytes if rule == "raw" else self.compressed_bytes


def count_code(paths: list[str | Path]) -> CodeAccount:
    account = CodeAccount()
    seen = set()
    for path in map(Path, paths):
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        if not path.is_file():
            raise InputError(f"{path}: code file not found; pass the files your submission ships with --code")
        data = read_bounded(path, MAX_TEXT_FILE_BYTES, "a code file")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                             "code files must be UTF-8 source") from exc
        size, method = self_extracting_size(data)
        account.files.append(CodeFile(str(path), len(data), size, method))
    return account


def default_code_files(folder: Path = Path(".")) -> list[Path]:
    candidate = folder / "train_gpt.py"
    return [candidate] if candidate.is_file() else []


@dataclass
class BudgetLine:
    budget: int
    model_bytes: int
    code_bytes: int
    loader_bytes: int
    code_rule: str

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.code_bytes + self.loader_bytes

    @property
    def headroom(self) -> int:
        return self.budget - self.total_bytes

    @property
    def ok(self) -> bool:
        return self.total_bytes <= self.budget

    def to_json(self) -> dict:
        return {"budget": self.budget, "model_bytes": self.model_bytes, "code_bytes": self.code_bytes,
                "loader_bytes": self.loader_bytes, "total_bytes": self.total_bytes, "headroom": self.headroom,
                "code_rule": self.code_rule}
