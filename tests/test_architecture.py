"""The domains depend on each other in one direction (DESIGN.md): no import circle.

Each domain's ``endpoints``/``commands`` modules are its interface layer and may use the
application's plumbing (``runtime``), which itself uses the domains' cores; so the graph is
drawn with a domain's interface as a node of its own. Every import counts, including ones
made inside functions or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import memberwise

ROOT = Path(memberwise.__file__).parent


def _is_interface(module: str) -> bool:
    return module.endswith(("endpoints", "commands"))


def _node(parts: tuple[str, ...]) -> str:
    domain = parts[0].removesuffix(".py")
    return f"{domain}.api" if len(parts) > 1 and _is_interface(parts[-1]) else domain


def domain_graph() -> dict[str, set[str]]:
    """Edges ``a -> b``: code of node ``a`` imports code of node ``b``."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        source = _node(parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "memberwise":
                    names = [f"memberwise.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if not name.startswith("memberwise."):
                    continue
                target = _node(tuple(name.split(".")[1:]))
                if target != source:
                    edges[source].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_between_domains() -> None:
    cycle = _cycle(domain_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_graph_sees_imports() -> None:
    """Guard against a graph that finds nothing and so can never fail."""
    edges = domain_graph()
    assert "membership" in edges["ledger"]
    assert "ledger" not in edges["membership"]
    assert "jobs" not in edges["membership"]
