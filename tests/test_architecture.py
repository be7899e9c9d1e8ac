"""The package's shape, from its imports (function-level ones included): the import-linter contracts
of pyproject.toml hold, every module sits in a layer, and no module imports itself round a circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib

pytestmark = pytest.mark.version_free

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_ext"


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _graph():
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True)


def test_the_import_contracts_hold():
    # lint-imports reads pyproject.toml from the working directory; the cache would be a file there.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_module_sits_in_a_layer():
    # the package's layers; a contract with containers layers the inside of one module (channels)
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers" and "containers" not in c]
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    top_level = {".".join(m.split(".")[:2]) for m in _graph().modules if m != PACKAGE}
    assert top_level - placed == set(), "add these to a layer in pyproject.toml"


def test_no_import_cycle_anywhere():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []
