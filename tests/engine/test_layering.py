"""The engine imports no executor, store, CLI or terminal display: they sit around it."""

from __future__ import annotations

import ast
import pathlib

import iterflow

FORBIDDEN = ("iterflow.executors", "iterflow.store", "iterflow.cli", "iterflow.progress")


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_engine_imports_nothing_from_the_layers_around_it():
    engine = pathlib.Path(iterflow.__file__).parent / "engine"
    assert (engine / "runner.py").exists()
    offenders = {
        f"{path.name}: {name}"
        for path in engine.glob("*.py")
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN)
    }
    assert not offenders
