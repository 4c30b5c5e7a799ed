"""The package's import structure: no module-level import cycle, and the pure packages never
import megatron or the plugin's megatron sub-package (not even inside a function)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "rlpt_plugin"
PURE = ("rlpt_plugin.world", "rlpt_plugin.judge", "rlpt_plugin.rl", "rlpt_plugin.teacher")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _targets(node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """What an import statement imports: ``from pkg import sub`` is the submodule ``pkg.sub``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names]
    return []


def test_no_module_level_import_cycle():
    modules = _modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            for target in _targets(node, modules):
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_pure_packages_import_nothing_of_megatron():
    modules = _modules()
    found = []
    for name, path in modules.items():
        if not name.startswith(PURE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(node, modules):
                if target.split(".")[0] == "megatron" or target.startswith("rlpt_plugin.megatron"):
                    found.append(f"{name} imports {target} (line {node.lineno})")
    assert found == []
