"""No import cycles between the package's modules (module-level imports; an import inside a function runs on first
use and is how a module defers an expensive or optional dependency, not a cycle at import time)."""

from __future__ import annotations

import ast
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# package -> source folder, as pyproject.toml's package-dir lays them out
PACKAGES = {
    "seed_hf": REPOSITORY / "seed_hf",
    "seed_hf.modeling": REPOSITORY / "modeling",
    "seed_hf.pipelines": REPOSITORY / "pipelines",
    "seed_hf.training": REPOSITORY / "training",
    "seed_hf.model_cards": REPOSITORY / "model_cards",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    imported = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Try):  # optional imports at module level still run at import time
            nodes = [n for block in (node.body, *[h.body for h in node.handlers]) for n in block]
        else:
            nodes = [node]
        for statement in nodes:
            if isinstance(statement, ast.Import):
                imported |= {alias.name for alias in statement.names}
            elif isinstance(statement, ast.ImportFrom):
                if statement.level:
                    base = package.rsplit(".", statement.level - 1)[0] if statement.level > 1 else package
                    target = f"{base}.{statement.module}" if statement.module else base
                else:
                    target = statement.module or ""
                imported.add(target)
                imported |= {f"{target}.{alias.name}" for alias in statement.names}
    return {module for module in imported if module in modules and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for neighbour in sorted(graph[node]):
            if state.get(neighbour) == 1:
                return [*stack[stack.index(neighbour) :], neighbour]
            if neighbour not in state and (found := visit(neighbour)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _module_level_imports(name, path, modules) for name, path in modules.items()}
    assert len(modules) > 30
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
