"""No module imports another app's private names: apps meet through the names they declare.

import-linter's contracts (.importlinter, run by `make lint` and `make test`) keep the layers of
docs/architecture.md; they see modules, not names, so this test covers the names.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _app(module: str) -> str:
    """The app (or library package) a dotted module belongs to: arena.evaluations.pipeline.plan -> arena.evaluations."""
    return ".".join(module.split(".")[:2])


def _private_imports() -> list[str]:
    found = []
    for path in sorted([*(ROOT / "arena").rglob("*.py"), *(ROOT / "ensembles").rglob("*.py")]):
        if "migrations" in path.parts:
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
                continue
            if not node.module.startswith(("arena.", "ensembles.")) or _app(node.module) == _app(module):
                continue
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another_app():
    assert _private_imports() == []
