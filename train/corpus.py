"""The embedded default corpus: real English text that is on every machine with
Python installed, so the demo and the tests need no download and generate nothing.

The documents are (1) the Python language-reference topics that ship with the
standard library (`pydoc_data.topics`, the text behind `help("FOR")` etc.) and
(2) the docstrings of a fixed, sorted list of pure-Python standard-library modules,
read with `ast` from their source files (nothing is imported, so no module side
effects run). The text therefore depends only on the Python version, and the
train/validation split is a deterministic function of each document's content.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from dataclasses import dataclass

# Pure-Python standard-library modules with substantial English docstrings. Fixed and
# sorted so the corpus is reproducible; modules missing from a trimmed Python install
# are skipped (the corpus fingerprint then differs, and run.json records it).
DOCSTRING_MODULES: tuple[str, ...] = (
    "_pydecimal", "argparse", "ast", "asyncio.base_events", "asyncio.events", "asyncio.locks",
    "asyncio.queues", "asyncio.streams", "asyncio.tasks", "base64", "bdb", "bisect", "calendar",
    "cmd", "codecs", "collections", "concurrent.futures._base", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "difflib", "dis", "doctest", "email.message", "email.utils", "enum",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip",
    "heapq", "hmac", "html.parser", "http.client", "http.cookiejar", "http.cookies", "http.server",
    "imaplib", "inspect", "ipaddress", "json", "json.decoder", "json.encoder", "locale",
    "logging", "logging.handlers", "mailbox", "mimetypes", "multiprocessing.pool", "netrc",
    "numbers", "optparse", "os", "pathlib", "pdb", "pickle", "pickletools", "platform", "plistlib",
    "poplib", "pprint", "pydoc", "queue", "random", "sched", "selectors", "shlex", "shutil",
    "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "turtle",
    "typing", "unittest.case", "unittest.mock", "urllib.parse", "urllib.request", "uuid",
    "warnings", "wave", "weakref", "zipfile", "zipimport",
)

MIN_DOCSTRING_CHARS = 200


@dataclass(frozen=True)
class Document:
    name: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _module_source(module_name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def module_docstrings(module_name: str) -> list[Document]:
    """Docstrings (module, classes, functions, methods) of one module, in source order."""
    source = _module_source(module_name)
    if source is None:
        return []
    tree = ast.parse(source)
    documents = []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    for node in nodes:
        docstring = ast.get_docstring(node, clean=True)
        if docstring and len(docstring) >= MIN_DOCSTRING_CHARS:
            label = getattr(node, "name", "<module>")
            documents.append(Document(f"{module_name}:{label}:{node.lineno if hasattr(node, 'lineno') else 0}",
                                      docstring))
    return documents


def reference_topics() -> list[Document]:
    """The language-reference topics shipped as `pydoc_data.topics` (absent on some
    trimmed installs, in which case the corpus is docstrings only)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return [Document(f"pydoc_data.topics:{key}", inspect.cleandoc(topics[key])) for key in sorted(topics)]


def embedded_documents() -> list[Document]:
    """Every document of the embedded corpus, in a fixed order."""
    documents = reference_topics()
    for module_name in DOCSTRING_MODULES:
        documents.extend(module_docstrings(module_name))
    return documents


def is_validation(document: Document, val_fraction: float) -> bool:
    """Deterministic split by document: the first 8 hex digits of the content hash."""
    return int(document.digest[:8], 16) / 0xFFFFFFFF < val_fraction


def split_documents(documents: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    train, val = [], []
    for document in documents:
        (val if is_validation(document, val_fraction) else train).append(document)
    return train, val


def corpus_fingerprint(documents: list[Document]) -> str:
    """sha256 over the documents' hashes, recorded in run.json."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.digest.encode("ascii"))
    return digest.hexdigest()
