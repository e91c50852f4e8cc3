"""The layout rules of docs/architecture.md, checked on the source: they fail when a change breaks them.

- the packages of ``pet`` import each other without a cycle (every import counts, also those inside functions);
- no module over 400 lines, no function over 80 lines;
- no first-party import wrapped in ``try/except ImportError``;
- every registered tier backend is a :class:`pet.models.tier.TierBackend`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PET = Path(__file__).resolve().parents[2] / "pet"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[str, Path, ast.Module]]:
    out = []
    for path in sorted(PET.rglob("*.py")):
        parts = path.relative_to(PET.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        out.append((name, path, ast.parse(path.read_text(), filename=str(path))))
    return out


def _package(module: str) -> str:
    """``pet.personal.bundle.read`` -> ``pet.personal``; top-level modules stand for themselves."""
    return ".".join(module.split(".")[:2])


def _pet_imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("pet."):
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names if a.name.startswith("pet."))
    return names


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_packages_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for name, _, tree in _modules():
        for target in _pet_imports(tree):
            a, b = _package(name), _package(target)
            if a != b:
                graph[a].add(b)
                where.setdefault((a, b), name)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (in {where[(a, b)]})" for a, b in zip(cycle, cycle[1:], strict=False)) + f" -> {cycle[-1]}"


def test_no_module_is_too_long():
    long = {str(p.relative_to(PET.parent)): n for _, p, _ in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (cut them into a subpackage): {long}"


def test_no_function_is_too_long():
    long = {}
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PET.parent)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_first_party_import_fallbacks():
    found = []
    for name, _, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches_import_error = any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError", "ModuleNotFoundError")
                                                          for e in h.type.elts)
                for h in node.handlers)
            if catches_import_error and any(_pet_imports(ast.Module(body=node.body, type_ignores=[]))):
                found.append(f"{name}:{node.lineno}")
    assert not found, f"first-party imports behind try/except ImportError: {found}"


@pytest.mark.parametrize("name", ["torch", "ort", "genai"])
def test_registered_tier_backends_are_tier_backends(name):
    from pet.models.tier import TierBackend, backend_class

    cls = backend_class(name)
    assert issubclass(cls, TierBackend)
    assert not getattr(cls, "__abstractmethods__", None), f"{cls.__name__} leaves abstract methods unimplemented"


def test_an_unknown_or_wrong_backend_is_refused(monkeypatch):
    from pet.models import tier

    with pytest.raises(ValueError, match="unknown tier backend 'nope'"):
        tier.backend_class("nope")
    monkeypatch.setitem(tier.BACKENDS, "bad", "pet.paths:layout")
    with pytest.raises(TypeError, match="is not a TierBackend"):
        tier.backend_class("bad")
    with pytest.raises(ValueError, match="module:Class"):
        tier.register_backend("x", "pet.paths.layout")
