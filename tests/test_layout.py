"""The package's shape: the public names import, no module imports itself back through
others, and no layer imports a layer above it (every import counts, deferred ones too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import simplenn

PACKAGE = Path(simplenn.__file__).resolve().parent

#: The layers, lowest first: a module may import its own layer and those below.
LAYERS = (
    {"simplenn._version", "simplenn.errors", "simplenn._optional", "simplenn._probes"},
    {"simplenn.backends"},
    # a backend's fast paths build on the network's math: imported by name when a run asks
    {
        "simplenn.core",
        "simplenn.optim",
        "simplenn.backends.numpy_fastpath",
        "simplenn.backends.numba.fastpath",
        "simplenn.backends.cupy.fastpath",
        "simplenn.backends.jax_fastpath",
    },
    {"simplenn.data", "simplenn.io"},
    {"simplenn.testing", "simplenn.cli", "simplenn.bench"},
    {
        "simplenn",
        "simplenn.train",
        "simplenn.evaluate",
        "simplenn.predict",
        "simplenn.export",
        "simplenn.sklearn",
    },
)

PUBLIC_NAMES = (
    "TwoLayerNet",
    "fit",
    "TrainConfig",
    "History",
    "EpochStats",
    "load_mnist",
    "load_idx_dataset",
    "DataSplit",
    "save_model",
    "load_model",
    "get_backend",
    "available_backends",
    "BackendInfo",
    "Ops",
    "SimplennError",
    "__version__",
    "export_onnx",
)
COMMAND_MODULES = (
    "simplenn.train",
    "simplenn.evaluate",
    "simplenn.predict",
    "simplenn.bench",
    "simplenn.export",
    "simplenn.testing",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_main_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and ast.unparse(node.test) in ("__name__ == '__main__'", "'__main__' == __name__")
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The simplenn modules that module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # a module's `if __name__ == "__main__":` block runs only as the program (module
    # __main__, not this one), so what it imports is no import of this module
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    best = None
    for rank, roots in enumerate(LAYERS):
        for root in roots:
            if module == root or (root != "simplenn" and module.startswith(root + ".")):
                if best is None or len(root) > best[1]:
                    best = (rank, len(root))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def test_public_names_import():
    missing = [n for n in PUBLIC_NAMES if not hasattr(simplenn, n)]
    assert not missing, f"simplenn lacks {missing}"
    assert not set(PUBLIC_NAMES) - set(simplenn.__all__), "missing from simplenn.__all__"


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_commands_run_as_modules(module):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr


def test_no_layer_imports_a_layer_above_it():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in sorted(_graph().items())
        for b in sorted(targets)
        if _layer(b) > _layer(a)
    ]
    assert not upward, "\n".join(upward)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
