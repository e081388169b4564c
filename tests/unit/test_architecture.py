"""The house rules of DESIGN.md, checked on the source: `core` never imports streamlit (the pool's
Streamlit cache is ui/model_pool.py), there is no import cycle inside `core` (imports inside
functions count too), and the command line starts without the heavy libraries that only some
commands need."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"
# Imported only inside the functions that need them: each costs start-up time or memory.
HEAVY = ("sklearn", "onnxruntime", "ray", "torchview", "torchinfo", "torchscan", "captum", "matplotlib")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (functions included)."""
    found: set[str] = set()
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..y import z`
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from core import weights`
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in CORE.rglob("*.py")}
    return {
        name: {other for other in imports(path) if other in modules and other != name and other != "core"}
        for name, path in modules.items()
    }


def test_core_never_imports_streamlit():
    offenders = [
        module_name(path)
        for path in CORE.rglob("*.py")
        if any(name == "streamlit" or name.startswith("streamlit.") for name in imports(path))
    ]
    assert offenders == []
    assert "streamlit" in imports(ROOT / "ui" / "model_pool.py")  # the pool's cache lives in ui/


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for neighbour in sorted(graph[node]):
            if state.get(neighbour) == 1:
                return path[path.index(neighbour) :] + [neighbour]
            if neighbour not in state and (cycle := visit(neighbour)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_core_has_no_import_cycle():
    assert find_cycle(core_graph()) is None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_runtime_holds_decisions_only():
    """core.runtime is below loading and predict: it imports nothing of core but the family table."""
    assert core_graph()["core.runtime"] <= {"core.models.families"}


@pytest.mark.parametrize("command", [["models"], ["--help"]])
def test_the_command_line_starts_without_heavy_libraries(command: list[str]):
    probe = (
        "import json, runpy, sys; heavy = json.loads(sys.argv[2]); sys.argv = ['core', *json.loads(sys.argv[1])]\n"
        "try:\n    runpy.run_module('core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(command), json.dumps(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`python -m core {' '.join(command)}` imported {loaded}"


MAX_LINES = 500


def test_no_source_file_is_over_500_lines():
    """Small modules with one job: a file past 500 lines holds more than one (the code standard)."""
    ours = [
        path
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part == "test-output" for part in path.relative_to(ROOT).parts)
    ]
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in ours}
    assert len(sizes) > 50
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}
