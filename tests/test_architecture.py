"""The package's layering, checked on the source: no import circle inside a stage, inference never imports the
stages above it, and importing the Segmenter loads neither ONNX Runtime nor the video pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

PACKAGE = REPO / "seglite"


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> set[str]:
    """Every seglite module a file imports, at the top or inside functions, except under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seglite"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("seglite"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        graph[_module_name(path)] = _imports(ast.parse(path.read_text()))
    return graph


def _cycle(graph: dict[str, set[str]], prefix: str) -> list[str] | None:
    nodes = {name for name in graph if name.startswith(prefix)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(
            t for t in graph.get(node, ()) if t in nodes and t != node and not node.startswith(t + ".")
        ):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_inside_inference():
    assert _cycle(_graph(), "seglite.inference") is None, _cycle(_graph(), "seglite.inference")


def test_inference_does_not_import_the_stages_above_it():
    graph = _graph()
    above = ("seglite.evaluation", "seglite.training", "seglite.bench", "seglite.cli")
    wrong = {
        (m, t)
        for m, targets in graph.items()
        if m.startswith("seglite.inference")
        for t in targets
        if t.startswith(above)
    }
    assert not wrong, wrong


def _fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter (nothing imported before it)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_top_level_names_load_on_first_use():
    """`import seglite` loads no torch (the CLI sets OpenMP's wait policy first); each name a script needs is there."""
    printed = _fresh_python(
        "import sys, seglite; light = 'torch' not in sys.modules; "
        "names = [getattr(seglite, n).__name__ for n in seglite.__all__ if n not in ('__version__',)]; "
        "print(light, names)"
    )
    assert printed.startswith("True [") and "'Trainer'" in printed and "'evaluate'" in printed
    with pytest.raises(AttributeError, match="module 'seglite' has no attribute 'segmenter'"):
        import seglite

        seglite.segmenter  # noqa: B018


def test_importing_the_segmenter_is_light():
    printed = _fresh_python(
        "import sys, seglite.inference.segmenter; "
        "print(sorted(m for m in ('onnxruntime', 'seglite.inference.video', 'seglite.inference.onnx_export') "
        "if m in sys.modules))"
    )
    assert printed == "[]"
