"""What ``import iterflow`` and a run without the store load: none of the heavy extras.

Each check runs in a fresh interpreter (a subprocess), since this test session
has imported everything already. Timings are not asserted here; they are in
``benchmarks/startup.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("sqlalchemy", "dask", "distributed", "rich", "starlette")


def _loaded(code: str, names: tuple[str, ...], tmp_path) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after ``code`` ran in a fresh process."""
    script = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps([n for n in {list(names)!r} if n in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ITERFLOW_HOME": str(tmp_path / "home")},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_iterflow_loads_no_heavy_extra(tmp_path):
    assert _loaded("import iterflow", HEAVY, tmp_path) == []


def test_public_names_load_no_heavy_extra(tmp_path):
    code = "import iterflow\nfor name in iterflow.__all__:\n    getattr(iterflow, name)"
    assert _loaded(code, HEAVY, tmp_path) == []


LOOP_RUN = """
import iterflow
from iterflow import LOOP, Flow, task

@task
def count(n):
    i = iterflow.context.loop_index
    if i < n:
        raise LOOP(result=i)
    return i

with Flow("startup") as flow:
    last = count(3)
state = flow.run(store={store})
assert state.is_successful(), state
assert state.result[last].result == 3
"""


def test_a_run_without_the_store_loads_neither_sqlalchemy_nor_asyncio(tmp_path):
    code = LOOP_RUN.format(store="None")
    assert _loaded(code, (*HEAVY, "asyncio"), tmp_path) == []


def test_a_sqlite_run_loads_sqlalchemy_but_not_its_postgresql_dialect(tmp_path):
    code = LOOP_RUN.format(store='"default"')
    names = (
        "sqlalchemy", "sqlalchemy.dialects.postgresql", "sqlalchemy.orm", "dask", "rich",
        "starlette",
        # What only queries, the dashboard or the CLI need: a run that records loads none.
        "iterflow.store.records", "iterflow.store.dashboard", "iterflow.cli",
    )
    assert _loaded(code, names, tmp_path) == ["sqlalchemy"]


def test_a_flow_without_schedules_loads_no_schedule_parsing(tmp_path):
    code = LOOP_RUN.format(store="None")
    assert _loaded(code, ("iterflow.schedules.definitions", "zoneinfo"), tmp_path) == []


def test_subpackages_are_reachable_from_a_plain_import_and_loaded_on_first_use(tmp_path):
    # ``import iterflow`` then ``iterflow.store.metrics(...)``, as the docs write it.
    code = (
        "import iterflow\n"
        "before = 'iterflow.store' in sys.modules\n"
        "assert callable(iterflow.store.metrics) and callable(iterflow.store.request_cancel)\n"
        "assert iterflow.executors.ThreadExecutor and iterflow.schedules.Cron\n"
        "assert iterflow.errors.IterflowError and iterflow.states.Success\n"
        "try:\n"
        "    iterflow.no_such_thing\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_thing' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('an unknown name resolved')\n"
        "assert not before\n"
    )
    assert _loaded(code, ("iterflow.store", "sqlalchemy"), tmp_path) == [
        "iterflow.store", "sqlalchemy"]
