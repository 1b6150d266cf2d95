"""The package's layout holds: no import cycle between its modules, and the device side (bundle, engines,
runtime, eval, data and the rest of the numpy-only modules) imports nothing from the torch side, at
module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "trtbert"
TORCH_SIDE = ("trtbert.exporter", "trtbert.train", "trtbert.modeling.heads", "trtbert.modeling.specs",
              "trtbert.modeling.source")
HEAVY = ("torch", "transformers", "accelerate")
DEVICE_SIDE = ("trtbert.bundle", "trtbert.engines", "trtbert.runtime", "trtbert.eval", "trtbert.data",
               "trtbert.memory", "trtbert.sizes", "trtbert.errors", "trtbert.describe", "trtbert.faults",
               "trtbert.modeling.checkpoint")


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> dict[str, bool]:
    """Modules imported by ``path``: name -> whether at module level (not inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, bool] = {}
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found[alias.name] = found.get(alias.name, False) or inner
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                names = [f"{base}.{a.name}" for a in child.names] + [base]
                for name in names:
                    found[name] = found.get(name, False) or inner
            visit(child, inner)

    visit(tree, True)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported, top in _imports(path).items():
            if module_level_only and not top:
                continue
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "trtbert":
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_cycles_between_modules() -> None:
    graph = _graph(module_level_only=True)
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif state.get(nxt) is None:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            walk(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_device_side_never_imports_the_torch_side() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        name = _module(path)
        if not name.startswith(DEVICE_SIDE):
            continue
        for imported in _imports(path):
            if imported.startswith(TORCH_SIDE) or imported.split(".")[0] in HEAVY:
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(bad)
