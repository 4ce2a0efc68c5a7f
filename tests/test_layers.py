"""The package's layers, read from its source: no import runs from a lower layer up to a higher one, the import
graph has no cycle (deferred imports inside functions included), and the library below `pipelines` never imports
diffusers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidsparse"

# Each subpackage's layer; a module may import its own layer and those below it.
LAYERS = {"core": 0, "kernels": 1, "methods": 2, "runtime": 3, "pipelines": 4, "search": 5, "yardstick": 5, "app": 6}
LOW_LEVEL = ("core", "kernels", "methods", "runtime")  # torch and triton only


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
# The deprecated aliases of the 0.1 layout are not part of the graph (they only forward to the new modules).
ALIASES = {name for name, path in MODULES.items() if "_deprecated import alias" in path.read_text()}


def _imports(name: str, path: Path) -> set[str]:
    """Every vidsparse module `name` imports, at any depth of its code."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("vidsparse") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items() if name not in ALIASES}


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_module_imports_a_higher_layer():
    upward = [(a, b) for a, targets in GRAPH.items() for b in targets
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert not upward, f"imports from a lower layer up to a higher one: {upward}"


def test_the_library_imports_no_deprecated_alias():
    used = [(a, b) for a, targets in GRAPH.items() for b in targets if b in ALIASES]
    assert not used, used


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (cycle := visit(node)):
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")


@pytest.mark.parametrize("layer", LOW_LEVEL)
def test_the_low_layers_never_import_diffusers(layer):
    for name, path in MODULES.items():
        if name.startswith(f"vidsparse.{layer}"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] == "diffusers" for n in names), f"{name} imports diffusers"


def test_the_checker_sees_real_edges():
    # The checker reads real source: a known edge must be found, or every test above would pass vacuously.
    assert "vidsparse.core.mask" in GRAPH["vidsparse.methods.base"]
    assert _layer("vidsparse.app.cli") == 6 and _layer("vidsparse.core.mask") == 0


def test_the_old_flat_paths_still_resolve_with_a_warning():
    import importlib
    import sys
    import warnings

    for old, new in (("vidsparse.layout", "vidsparse.core.layout"), ("vidsparse.delta", "vidsparse.methods.delta"),
                     ("vidsparse.pipelines.runtime", "vidsparse.runtime.runtime"), ("vidsparse.builtin", "vidsparse.app.models")):
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
