"""The examples in iterflow's docstrings run as written.

Every module under ``src/iterflow`` is imported and its doctests are run, one
test per module. An example that cannot run on its own (it needs a cluster, or
names a flow built elsewhere) is marked ``# doctest: +SKIP`` beside it, with
its reason in the prose around it.

A test rather than ``--doctest-modules``: pytest would import every module at
collection, outside the warning filters and before any test's environment is
set, and the example runs here each get their own ``ITERFLOW_HOME``.
"""

from __future__ import annotations

import doctest
import importlib
import types
from pathlib import Path

import pytest

import iterflow

# Top-level packages an optional extra installs (pyproject's optional-dependencies):
# a module that needs one is skipped only when the extra is not installed.
EXTRAS = {"dask": "dask", "distributed": "dask", "psycopg": "postgres"}

# Examples known not to run yet, each with its reason; an entry is dropped with its fix.
# The test still runs them, and is expected to fail only while they fail.
PENDING = {
    "iterflow.store": "`store = open_store()` runs though the import above it is skipped (store/)",
    "iterflow.store.runstore": "`sink = store.sink()` lacks +SKIP after a skipped line (store/)",
}


def module_names() -> list[str]:
    # Walk the files, not pkgutil: core/ and engine/ are namespace packages (no
    # __init__.py), which pkgutil.walk_packages does not enter.
    root = Path(iterflow.__file__).parent
    names = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":  # running it would start the command line
            names.append(".".join(parts))
    return sorted(names)


MODULES = module_names()


def import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS:
            pytest.skip(f"{name} needs the {EXTRAS[missing]!r} extra ({missing} is missing)")
        raise


def failed_examples(module: types.ModuleType, name: str) -> list[str]:
    """Run the module's docstring examples; the report of each one that failed."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    # The finder keeps to objects defined in the module, not those it imports.
    for test in finder.find(module, name):
        runner.run(test, out=failures.append, clear_globs=True)
    return failures


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path, monkeypatch) -> None:
    module = import_or_skip(name)
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    failures = failed_examples(module, name)
    if failures and name in PENDING:
        pytest.xfail(PENDING[name])
    assert not failures, "".join(failures)


def test_every_module_is_collected() -> None:
    assert {"iterflow.core.flow", "iterflow.errors", "iterflow.runids"} <= set(MODULES)


def test_a_wrong_example_is_reported_and_a_skipped_one_is_not() -> None:
    module = types.ModuleType("sample")
    exec(
        "def wrong():\n"
        "    \"\"\"\n"
        "    >>> 1 + 1\n"
        "    3\n"
        "    >>> undefined_name  # doctest: +SKIP\n"
        "    \"\"\"\n",
        module.__dict__,
    )
    failures = failed_examples(module, "sample")
    assert len(failures) == 1
    assert "1 + 1" in failures[0] and "undefined_name" not in failures[0]
