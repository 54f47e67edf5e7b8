"""The layering of the packages, read from the source (``ast``), so that a change that breaks it fails here.

docs/architecture.md: the model (``solvable_attention``) at the bottom imports neither the theory nor the
simulator; the theory (``state_evolution``) and the finite-D simulator (``simulations.simulator``) sit side
by side and never import each other; campaigns, figures and the command line sit above both. No module
imports itself back through a chain of imports (no cycles), counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solvable_attention", "state_evolution", "simulations")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Project modules imported by each project module (a ``from pkg import name`` of a submodule counts
    as importing that submodule)."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


MODULES = _modules()
GRAPH = _imports(MODULES)


def _layer(module: str) -> str:
    if module.startswith("solvable_attention"):
        return "model"
    if module.startswith("state_evolution"):
        return "theory"
    if module.startswith("simulations.simulator"):
        return "simulator"
    return "above"  # simulations (campaigns, figures, cli) and its package __init__


ALLOWED = {"model": {"model"}, "theory": {"model", "theory"}, "simulator": {"model", "simulator"},
           "above": {"model", "theory", "simulator", "above"}}


def test_the_source_tree_was_found():
    assert {"solvable_attention.params", "state_evolution.pretraining", "simulations.simulator.two_stage",
            "simulations.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_or_sideways_imports(module):
    layer = _layer(module)
    wrong = sorted(t for t in GRAPH[module] if _layer(t) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) imports {wrong}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search for back edges; each cycle found as a list of modules. A package and its own
    submodules are not a cycle (importing a submodule runs its package's ``__init__``)."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if t.startswith(m + ".") or m.startswith(t + "."):
                continue
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    """A synthetic graph with a cycle is caught; the model may not import the theory, nor the simulator the
    theory, nor the theory the simulator."""
    assert find_cycles({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == [["a.x", "a.y", "a.z", "a.x"]]
    assert find_cycles({"a": {"a.x"}, "a.x": {"a"}}) == []
    assert _layer("solvable_attention.data") == "model" and "theory" not in ALLOWED["model"]
    assert "theory" not in ALLOWED["simulator"] and "simulator" not in ALLOWED["theory"]
