"""The package layout is a contract: stages import only the foundation and earlier
stages, `artifactkit` never imports `train`, `eval` imports neither, and every stage's
package docstring maps its modules. Read from source with `ast` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOUNDATION = {"errors", "io", "checkpoint", "budget", "table", "synthetic"}
STAGES = ["plan", "quantize", "format", "roundtrip", "fit", "report"]  # in pipeline order
TOP = {"cli", "commands", "entry", "__main__"}  # the command line: may import everything


def _rank(part: str) -> int:
    if part in FOUNDATION or part == "__init__":
        return 0
    if part in STAGES:
        return 1 + STAGES.index(part)
    if part in TOP:
        return 1 + len(STAGES)
    raise AssertionError(f"artifactkit/{part}: not a known stage or foundation module; add it to the layout "
                         "table in artifactkit/__init__.py and this test")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "artifactkit":  # `from artifactkit import plan`: the names are modules
                found += [f"artifactkit.{alias.name}" for alias in node.names]
    return found


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(path: Path, own: str) -> list[str]:
    """What `path` (a module of stage / foundation module `own`) imports against the layout."""
    problems = []
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "train":
            problems.append(f"{path.name} imports {name}: artifactkit never imports train")
        if parts[0] != "artifactkit" or len(parts) < 2 or parts[1] == "__version__":
            continue
        target = parts[1]
        if _rank(target) > _rank(own) or (_rank(own) == 0 and own != "__init__" and _rank(target) > 0):
            problems.append(f"{path.name} ({own}) imports {name}: a later stage")
    return problems


def test_stages_import_only_earlier_stages():
    problems = []
    for path in _modules("artifactkit"):
        own = path.relative_to(ROOT / "artifactkit").parts[0].removesuffix(".py")
        problems += [f"artifactkit/{own}: {problem}" for problem in _violations(path, own)]
    assert not problems, "\n".join(problems)


def test_eval_is_the_base_layer():
    for path in _modules("eval"):
        for name in _imports(path):
            assert name.split(".")[0] not in ("artifactkit", "train"), f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_module_is_mapped_in_its_package_docstring(stage):
    package = ROOT / "artifactkit" / stage
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    for module in package.glob("*.py"):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in docstring, f"artifactkit/{stage}/__init__.py does not map `{module.stem}`"


def test_the_layout_test_sees_a_violation(tmp_path):
    """The checker itself: plan importing format, foundation importing a stage, and
    anything importing train are each reported; plan importing the foundation is not."""
    bad = tmp_path / "bad.py"
    bad.write_text("from artifactkit.format.akit import MAGIC\nimport train.model\n")
    assert len(_violations(bad, "plan")) == 2
    assert _violations(bad, "report") == ["bad.py imports train.model: artifactkit never imports train"]
    good = tmp_path / "good.py"
    good.write_text("from artifactkit.errors import InputError\nfrom artifactkit.plan import schemes\n")
    assert _violations(good, "quantize") == [] and _violations(good, "plan") == []
    assert len(_violations(good, "checkpoint")) == 1
