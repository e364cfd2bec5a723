"""Code bytes of a submission folder, recomputed rather than taken from the log: the
entry script plus every local module it imports (recursively), and every file in the
folder it opens or compiles by a literal path. A self-extracting entry script
(`exec(lzma.decompress(base64.b85decode("...")))`) is decoded without being run: the
literal is read with `ast`, the decoders come from a short allow-list, and decompression
is bounded. Byte counts under the raw / compressed rules come from `artifactkit.budget`."""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import lzma
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifactkit.budget import count_code
from artifactkit.errors import InputError

ENTRY_SCRIPT = "train_gpt.py"
CODE_SUFFIXES = frozenset({".py", ".pyx", ".pxd", ".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hpp",
                           ".so", ".sh", ".js", ".rs", ".go"})
METADATA_NAMES = frozenset({"readme.md", "submission.json", "requirements.txt", "license", "license.md"})
MAX_DECODED_BYTES = 64 * 1024 * 1024  # a wrapper that inflates past this is not a training script
MAX_WRAPPER_DEPTH = 4
MAX_LITERAL_PATH = 260
MAX_LISTED_FILES = 2000
SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "venv", ".venv"})
EXEC_FUNCTIONS = frozenset({"exec", "eval", "compile"})
WRAPPED = " (inside its compressed wrapper)"


class NotALiteral(Exception):
    """The expression is not built from literals and allow-listed decoders only."""


def _bounded(name: str, output: bytes, finished: bool) -> bytes:
    if not finished or len(output) >= MAX_DECODED_BYTES:
        raise ValueError(f"{name} output exceeds {MAX_DECODED_BYTES:,} bytes")
    return output


def _lzma_decompress(data: bytes, format: int = lzma.FORMAT_AUTO, memlimit: int | None = None,  # noqa: A002
                     filters: Any = None) -> bytes:
    decompressor = lzma.LZMADecompressor(format=format, memlimit=memlimit, filters=filters)
    output = decompressor.decompress(data, max_length=MAX_DECODED_BYTES)
    return _bounded("lzma", output, decompressor.eof or decompressor.needs_input)


def _zlib_decompress(data: bytes, wbits: int = zlib.MAX_WBITS, bufsize: int = 0) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    output = decompressor.decompress(data, MAX_DECODED_BYTES)
    return _bounded("zlib", output, not decompressor.unconsumed_tail)


def _bz2_decompress(data: bytes) -> bytes:
    decompressor = bz2.BZ2Decompressor()
    output = decompressor.decompress(data, max_length=MAX_DECODED_BYTES)
    return _bounded("bz2", output, decompressor.eof or decompressor.needs_input)


def _gzip_decompress(data: bytes) -> bytes:
    return _zlib_decompress(data, wbits=31)


# The only callables a wrapper's payload expression may use: decoders and bounded decompressors.
DECODERS: dict[str, Callable[..., Any]] = {
    "base64.b85decode": base64.b85decode, "base64.b64decode": base64.b64decode,
    "base64.a85decode": base64.a85decode, "base64.b32decode": base64.b32decode,
    "base64.b16decode": base64.b16decode, "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
    "base64.standard_b64decode": base64.standard_b64decode, "base64.decodebytes": base64.decodebytes,
    "binascii.a2b_base64": binascii.a2b_base64, "binascii.unhexlify": binascii.unhexlify,
    "bytes.fromhex": bytes.fromhex,
    "lzma.decompress": _lzma_decompress, "zlib.decompress": _zlib_decompress,
    "bz2.decompress": _bz2_decompress, "gzip.decompress": _gzip_decompress,
}
CONSTANT_MODULES = {"lzma": lzma, "zlib": zlib}  # FORMAT_RAW, FILTER_LZMA2, MAX_WBITS ...
TEXT_CODECS = frozenset({"utf-8", "utf8", "ascii", "latin-1", "latin1"})


@dataclass
class Wrapper:
    """A self-extracting script: `raw_bytes` shipped decode to `decoded_bytes` of source."""

    decoded_bytes: int
    chain: str

    def to_json(self) -> dict:
        return {"decoded_bytes": self.decoded_bytes, "chain": self.chain}


@dataclass
class CodeFile:
    path: str  # relative to the folder
    raw_bytes: int
    compressed_bytes: int
    counted_bytes: int  # under the rule in use
    reason: str
    imports: list[str] = field(default_factory=list)
    wrapper: Wrapper | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "raw_bytes": self.raw_bytes, "compressed_bytes": self.compressed_bytes,
                "counted_bytes": self.counted_bytes, "reason": self.reason, "imports": self.imports,
                "wrapper": self.wrapper.to_json() if self.wrapper else None}


@dataclass
class ShippedFile:
    path: str
    bytes: int
    kind: str  # code / log / metadata / other
    reason: str
    imports: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"path": self.path, "bytes": self.bytes, "kind": self.kind, "reason": self.reason,
                "imports": self.imports}


@dataclass
class CodeReport:
    rule: str
    entry: str | None
    counted: list[CodeFile] = field(default_factory=list)
    not_counted: list[ShippedFile] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "PATH: cause" for code we could not follow

    @property
    def counted_bytes(self) -> int:
        return sum(f.counted_bytes for f in self.counted)

    @property
    def counted_raw_bytes(self) -> int:
        return sum(f.raw_bytes for f in self.counted)

    @property
    def entry_file(self) -> CodeFile | None:
        return next((f for f in self.counted if f.path == self.entry), None)

    @property
    def helpers(self) -> list[CodeFile]:
        return [f for f in self.counted if f.path != self.entry]

    def to_json(self) -> dict:
        return {"rule": self.rule, "entry": self.entry, "counted_bytes": self.counted_bytes,
                "counted_raw_bytes": self.counted_raw_bytes,
                "counted": [f.to_json() for f in self.counted],
                "not_counted": [f.to_json() for f in self.not_counted], "unreadable": self.unreadable}


# ---- evaluating a wrapper's payload without running it ------------------------------

class _PayloadEvaluator:
    """Evaluates an expression made only of literals, module constants of lzma / zlib,
    module-level literal assignments and the DECODERS; anything else is NotALiteral."""

    def __init__(self, tree: ast.Module) -> None:
        self.aliases: dict[str, str] = {}
        self.assignments: dict[str, ast.expr] = {}
        self.chain: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                        alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assignments[node.targets[0].id] = node.value

    def qualified(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id if node.id in ("bytes", "bytearray") else None)
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def evaluate(self, node: ast.expr, depth: int = 0) -> Any:
        if depth > 50:
            raise NotALiteral("expression too deep")
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.evaluate(item, depth + 1) for item in node.elts]
        if isinstance(node, ast.Dict) and None not in node.keys:
            return {self.evaluate(k, depth + 1): self.evaluate(v, depth + 1) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.evaluate(node.left, depth + 1), self.evaluate(node.right, depth + 1)
            if type(left) is type(right) and isinstance(left, (str, bytes)):
                return left + right
            raise NotALiteral("+ of non-literals")
        if isinstance(node, ast.Name) and node.id in self.assignments:
            return self.evaluate(self.assignments.pop(node.id), depth + 1)  # pop: no self-reference loops
        if isinstance(node, ast.Attribute):
            name = self.qualified(node) or ""
            module, _, attr = name.rpartition(".")
            value = getattr(CONSTANT_MODULES.get(module), attr, None) if attr.isupper() else None
            if isinstance(value, int):
                return value
            raise NotALiteral(f"attribute {name or node.attr}")
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise NotALiteral(type(node).__name__)

    def _call(self, node: ast.Call, depth: int) -> Any:
        args = [self.evaluate(a, depth + 1) for a in node.args]
        kwargs = {k.arg: self.evaluate(k.value, depth + 1) for k in node.keywords if k.arg}
        name = self.qualified(node.func)
        if name in DECODERS:
            self.chain.append(name)
            return DECODERS[name](*args, **kwargs)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("decode", "encode"):
            value = self.evaluate(node.func.value, depth + 1)
            codec = str(args[0] if args else kwargs.get("encoding", "utf-8")).lower()
            if isinstance(value, (bytes, str)) and codec in TEXT_CODECS:
                return getattr(value, node.func.attr)(codec)
        raise NotALiteral(f"call of {name or ast.dump(node.func)[:40]}")


def decode_wrapper(tree: ast.Module) -> list[tuple[str, str]]:
    """[(decoded source, decoder chain)] for every exec/eval/compile of a literal payload.
    Raises ValueError when a literal payload is there but does not decode."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in EXEC_FUNCTIONS
                and node.args):
            continue
        evaluator = _PayloadEvaluator(tree)
        try:
            payload = evaluator.evaluate(node.args[0])
        except NotALiteral:
            continue
        except (ValueError, TypeError, lzma.LZMAError, zlib.error, OSError, binascii.Error) as exc:
            raise ValueError(f"its {node.func.id}(...) payload does not decode ({type(exc).__name__}: {exc})") from exc
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"its {node.func.id}(...) payload is not UTF-8 source") from exc
        if isinstance(payload, str) and evaluator.chain:
            found.append((payload, " -> ".join(evaluator.chain)))
    return found


# ---- finding the local files a script pulls in --------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    """A regular file inside FOLDER. A literal may be any string, so a name the file
    system refuses (too long, NUL) is simply not a file."""
    try:
        path.resolve().relative_to(folder.resolve())
        return path.is_file()
    except (ValueError, OSError):
        return False


def _resolve_module(dotted: str, bases: list[Path], folder: Path, names: list[str] = ()) -> list[Path]:
    """Local files that `import dotted` (or `from dotted import names`) executes."""
    try:
        return _resolve_module_in(dotted, bases, folder, names)
    except OSError:  # an import_module("...") literal the file system refuses as a name
        return []


def _resolve_module_in(dotted: str, bases: list[Path], folder: Path, names: list[str]) -> list[Path]:
    for base in bases:
        found, current, is_package = [], base, True
        for part in [p for p in dotted.split(".") if p]:
            if (current / part / "__init__.py").is_file():
                current = current / part
                found.append(current / "__init__.py")
            elif (current / f"{part}.py").is_file():
                found.append(current / f"{part}.py")
                is_package = False
                break
            elif (current / part).is_dir():
                current = current / part  # a namespace package
            else:
                extensions = sorted(current.glob(f"{part}.*.so")) + [current / f"{part}.so"]
                found += [e for e in extensions[:1] if e.is_file()]
                is_package = False
                break
        if is_package:
            for name in names:
                for candidate in (current / f"{name}.py", current / name / "__init__.py"):
                    if candidate.is_file():
                        found.append(candidate)
        found = [f for f in found if _inside(f, folder)]
        if found:
            return found
    return []


def _docstring_ids(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        for statement in getattr(node, "body", []) if isinstance(getattr(node, "body", None), list) else []:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                ids.add(id(statement.value))
    return ids


def local_references(tree: ast.Module, path: Path, folder: Path) -> list[tuple[Path, str]]:
    """(file, how) for every file in FOLDER that this module imports or names by a literal path."""
    here = path.parent
    bases = list(dict.fromkeys([folder, here]))
    found: list[tuple[Path, str]] = []
    skip = _docstring_ids(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += [(p, "imported") for p in _resolve_module(alias.name, bases, folder)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if node.level == 1 else here.parents[min(node.level - 2, len(here.parents) - 1)]
                targets = _resolve_module(node.module or "", [base], folder, [a.name for a in node.names])
            else:
                targets = _resolve_module(node.module or "", bases, folder, [a.name for a in node.names])
            found += [(p, "imported") for p in targets]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and (
                (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            found += [(p, "imported") for p in _resolve_module(node.args[0].value, bases, folder)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip \
                and 0 < len(node.value) <= MAX_LITERAL_PATH and "\n" not in node.value and "\x00" not in node.value:
            for base in bases:
                candidate = base / node.value
                if _inside(candidate, folder) and candidate.resolve() != path.resolve():
                    found.append((candidate, f"opened (literal path {node.value!r})"))
                    break
    return found


def _kind(path: Path, logs: set[Path]) -> str:
    if path.resolve() in logs:
        return "log"
    if path.name.lower() in METADATA_NAMES or path.suffix.lower() == ".md":
        return "metadata"
    return "code" if path.suffix.lower() in CODE_SUFFIXES else "other"


def _sizes(path: Path) -> tuple[int, int]:
    """(raw bytes, smallest self-extracting bytes) via the budget module; binary files
    (a compiled extension) cannot be wrapped as source and count raw."""
    try:
        account = count_code([path])
    except InputError:
        size = path.stat().st_size
        return size, size
    return account.files[0].raw_bytes, min(account.files[0].raw_bytes, account.files[0].compressed_bytes)


def _analyse(path: Path, folder: Path, unreadable: list[str]) -> tuple[list[tuple[Path, str, str]], Wrapper | None]:
    """Local references of one file, looking inside self-extracting wrappers."""
    if path.suffix.lower() != ".py":
        return [], None
    relative = path.relative_to(folder)
    try:
        sources, wrapper = [(path.read_text(encoding="utf-8"), "")], None
    except (UnicodeDecodeError, OSError) as exc:
        unreadable.append(f"{relative}: not readable UTF-8 source ({exc})")
        return [], None
    references: list[tuple[Path, str, str]] = []
    for _depth in range(MAX_WRAPPER_DEPTH):
        next_sources = []
        for source, via in sources:
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError) as exc:
                unreadable.append(f"{relative}: {'decoded wrapper ' if via else ''}source does not parse ({exc})")
                continue
            references += [(p, how, WRAPPED if via else "") for p, how in local_references(tree, path, folder)]
            try:
                decoded = decode_wrapper(tree)
            except ValueError as exc:
                unreadable.append(f"{relative}: {exc}")
                continue
            for inner, chain in decoded:
                wrapper = wrapper or Wrapper(len(inner.encode("utf-8")), chain)
                next_sources.append((inner, chain))
        sources = next_sources
        if not sources:
            break
    return references, wrapper


def shipped_files(folder: Path, limit: int = MAX_LISTED_FILES) -> list[Path]:
    """The files a submission folder ships, without hidden folders, caches and virtual
    environments; at most LIMIT (a submission folder is small; this is not a repo walker)."""
    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in SKIPPED_FOLDERS)
        found += [Path(root) / name for name in sorted(files) if not name.startswith(".")]
        if len(found) >= limit:
            break
    return sorted(found[:limit])


def account_code(folder: Path, rule: str, logs: list[Path] = (), entry: str = ENTRY_SCRIPT) -> CodeReport:
    """What counts as code under RULE (entry + local imports + literal-path files, recursively)
    and what else ships in FOLDER, with bytes."""
    report = CodeReport(rule=rule, entry=entry if (folder / entry).is_file() else None)
    log_paths = {p.resolve() for p in logs}
    counted: dict[Path, CodeFile] = {}
    queue: list[tuple[Path, str]] = [(folder / entry, "entry script")] if report.entry else []
    while queue:
        path, reason = queue.pop(0)
        if path.resolve() in counted or _kind(path, log_paths) in ("log", "metadata"):
            continue
        references, wrapper = _analyse(path, folder, report.unreadable)
        raw, compressed = _sizes(path)
        relative = str(path.relative_to(folder))
        imports = sorted({str(p.relative_to(folder)) for p, _, _ in references})
        counted[path.resolve()] = CodeFile(relative, raw, compressed, raw if rule == "raw" else compressed,
                                           reason, imports, wrapper)
        queue += [(p, f"{how} by {relative}{where}") for p, how, where in references]
    report.counted = list(counted.values())
    for path in shipped_files(folder):
        if path.resolve() in counted:
            continue
        try:
            size = path.stat().st_size
        except OSError:  # gone or unreadable while we looked: it is not shipped
            continue
        kind = _kind(path, log_paths)
        imports = sorted({str(p.relative_to(folder)) for p, _, _ in _analyse(path, folder, [])[0]}) \
            if kind == "code" else []
        reason = {"code": f"not imported or opened by {entry}", "log": "training log",
                  "metadata": "submission metadata", "other": "not code"}[kind]
        report.not_counted.append(ShippedFile(str(path.relative_to(folder)), size, kind, reason, imports))
    return report
