"""The public API's names, their docstrings, and the one-way imports between the layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gradlens

PACKAGE = Path(gradlens.__file__).resolve().parent

EXPORTED = [
    "Diagnostic",
    "Explanation",
    "GradlensError",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Guard",
    "InplaceError",
    "InplaceViolation",
    "InplaceWarning",
    "Inspection",
    "Lens",
    "NoGraphError",
    "ParamStats",
    "SchemaError",
    "StepRecord",
    "TensorStatus",
    "Trace",
    "TraceRecord",
    "WatchRecord",
    "__version__",
    "explain",
    "graph",
    "guard",
    "inspect",
    "load",
    "save",
    "trace",
    "watch",
]


def test_all_is_locked() -> None:
    assert gradlens.__all__ == EXPORTED
    assert sorted(gradlens.__all__) == gradlens.__all__


def test_every_exported_name_exists() -> None:
    for name in EXPORTED:
        assert hasattr(gradlens, name), name
    assert gradlens.__version__ == "0.1.0"


def test_no_other_public_names() -> None:
    public = {
        name
        for name, value in vars(gradlens).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert public == {name for name in EXPORTED if not name.startswith("_")}


@pytest.mark.parametrize("name", [n for n in EXPORTED if n != "__version__"])
def test_exported_name_is_documented(name: str) -> None:
    obj = getattr(gradlens, name)
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__
    assert doc, f"gradlens.{name} has no docstring"
    assert not doc.startswith(f"{name}("), f"gradlens.{name} has only dataclass's generated doc"
    assert len(doc.strip()) > 20


def test_errors_form_one_family() -> None:
    assert issubclass(gradlens.NoGraphError, gradlens.GradlensError)
    assert issubclass(gradlens.SchemaError, gradlens.GradlensError)
    assert issubclass(gradlens.NoGraphError, ValueError)


# ---- layering ---------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Returns the absolute names of every module ``path`` imports, lazily or not."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # ``from . import x`` imports the submodule x when there is one.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if module_path(candidate) is not None:
                    found.add(candidate)
    return found


def module_path(name: str) -> Path | None:
    if not name.startswith("gradlens"):
        return None
    rel = Path(*name.split(".")[1:])
    for path in (PACKAGE / rel / "__init__.py", (PACKAGE / rel).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def files_of(layer: str) -> list[Path]:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, layer
    return files


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def reachable(path: Path) -> set[str]:
    """Returns every module reachable from ``path`` through imports inside gradlens."""
    seen: set[str] = set()
    todo = [path]
    visited: set[Path] = set()
    while todo:
        p = todo.pop()
        if p in visited:
            continue
        visited.add(p)
        for name in imported_modules(p):
            seen.add(name)
            target = module_path(name)
            if target is not None and name != "gradlens":
                todo.append(target)
    return seen


def test_import_resolution_sees_relative_imports() -> None:
    # The checks below are only as good as this resolution.
    assert "gradlens.records" in imported_modules(PACKAGE / "analysis" / "errors.py")
    assert "gradlens.render.dot" in imported_modules(PACKAGE / "records" / "graph.py")
    assert "torch" in imported_modules(PACKAGE / "capture" / "summary.py")
    assert "gradlens.records" in reachable(PACKAGE / "capture" / "graph.py")


@pytest.mark.parametrize("layer", ["records", "analysis", "render"])
def test_pure_layers_never_import_torch_or_capture(layer: str) -> None:
    for path in files_of(layer):
        names = reachable(path)
        bad = sorted(
            n
            for n in names
            if is_under(n, "torch") or is_under(n, "gradlens.capture") or n == "gradlens"
        )
        assert bad == [], f"{path.relative_to(PACKAGE)} reaches {bad}"
        assert not any(
            is_under(n, "gradlens._api") or is_under(n, "gradlens._trace") for n in names
        )


def test_capture_never_imports_analysis_or_render() -> None:
    # Directly: records' Graph.to_dot() hands itself to render lazily, which capture may reach.
    for path in files_of("capture"):
        names = imported_modules(path)
        bad = sorted(
            n for n in names if is_under(n, "gradlens.analysis") or is_under(n, "gradlens.render")
        )
        assert bad == [], f"{path.relative_to(PACKAGE)} reaches {bad}"


def test_records_never_import_analysis() -> None:
    # At import time: only the convenience methods (Graph.view, Graph.to_dot) hand the record
    # to analysis and render lazily, inside the method (the module-view contract, issue 10).
    for path in files_of("records"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                assert "analysis" not in (node.module or ""), path
            elif isinstance(node, ast.Import):
                assert not any("analysis" in a.name for a in node.names), path
    lazy = imported_modules(PACKAGE / "records" / "graph.py")
    assert {n for n in lazy if is_under(n, "gradlens.analysis")} == {"gradlens.analysis.views"}


def test_pure_layers_import_without_torch_at_runtime() -> None:
    # gradlens/__init__ imports torch, so the package is stubbed: its submodules are imported
    # from their files, while any import of torch fails.
    code = f"""
import importlib.abc, sys, types
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch imported by " + name)
        return None
sys.meta_path.insert(0, NoTorch())
pkg = types.ModuleType("gradlens")
pkg.__path__ = [{str(PACKAGE)!r}]
sys.modules["gradlens"] = pkg
import gradlens.records, gradlens.records.serialize, gradlens.analysis
import gradlens.render.dot, gradlens.render.terminal, gradlens.render.graphviz
from gradlens.records import Graph
from gradlens.analysis import diagnose
assert diagnose(()) == []
assert "torch" not in sys.modules
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
