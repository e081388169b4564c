"""The shape of `core`: wings named for their jobs, and the imports each wing may make.

Read from the source (ast), not by importing: a rule broken inside a function body counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"

WINGS = (
    "models", "engines", "classify", "inside", "features", "datasets", "finetune", "batch", "cli", "jobs", "choose",
    "shrink",
)  # fmt: skip
TOP_LEVEL = {"__init__", "__main__", "errors", "images", "preprocessing", "progress", "runtime"}

# wing -> wings it must never import (besides cli, ui and pages, which nothing in core imports).
FORBIDDEN = {
    "models": {"engines", "classify", "inside", "features", "finetune", "batch", "choose"},
    "inside": {"finetune", "features", "batch"},
    "features": {"finetune", "batch"},
    "datasets": {"models", "engines", "classify", "inside", "features", "finetune", "batch"},
    "classify": {"finetune", "batch"},
    "engines": {"finetune", "batch", "inside", "features", "choose"},
    "jobs": {"models", "engines", "classify", "inside", "features", "datasets", "finetune", "batch", "choose"},
    # Choose measures catalogue models as they are: it never trains, embeds or explains.
    "choose": {"classify", "inside", "features", "finetune", "batch"},
    "shrink": {"features", "batch", "choose"},
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, as dotted names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "core" and parts[1] in WINGS else None


def test_at_most_six_modules_stay_at_the_top_of_core():
    modules = {path.stem for path in CORE.glob("*.py")}
    assert modules <= TOP_LEVEL, f"new top-level modules: {sorted(modules - TOP_LEVEL)}; put them in a wing"
    assert len(modules - {"__init__"}) <= 6


@pytest.mark.parametrize("wing", WINGS)
def test_every_wing_says_what_it_owns(wing):
    init = CORE / wing / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 12, f"core/{wing}/__init__.py needs a paragraph on what it owns"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_streamlit_ui_pages_or_cli(path):
    bad = {
        name
        for name in _imports(path)
        if name.split(".")[0] in {"streamlit", "ui", "pages"}
        or (name.startswith("core.cli") and not str(path.relative_to(CORE)).startswith(("cli", "__main__")))
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_wings_import_only_what_they_may(path):
    relative = path.relative_to(CORE)
    wing = relative.parts[0] if len(relative.parts) > 1 else None
    forbidden = FORBIDDEN.get(wing or "", set())
    bad = sorted(name for name in _imports(path) if _wing(name) in forbidden)
    assert not bad, f"core/{relative} (wing {wing}) imports {bad}"


def test_the_rules_catch_a_forbidden_import(tmp_path):
    """The checker itself: a features module importing finetune is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from core.finetune.train import train\n")
    assert any(_wing(name) == "finetune" for name in _imports(sample))
