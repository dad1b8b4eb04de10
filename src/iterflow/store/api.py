"""The store's questions as functions: each takes the store as ``store=``.

``store`` is a :class:`~iterflow.store.runstore.RunStore`, a URL, or ``None``
for the default store (``ITERFLOW_STORE_URL`` or ``$ITERFLOW_HOME/iterflow.db``);
a store opened here is closed before the function returns. Each function is
the :class:`~iterflow.store.runstore.RunStore` method of the same name, whose
docstring says what it answers.

>>> from iterflow.store import list_runs, task_runs    # doctest: +SKIP
>>> for run in list_runs(limit=5):                      # doctest: +SKIP
...     print(run.run_id[:8], run.flow_name, run.state)
"""

from __future__ import annotations

from typing import Any

from iterflow.events import ResumePoint
from iterflow.store.records import IterationRecord, LogEntry, RunInfo, TaskRunInfo
from iterflow.store.runstore import RunStore, using_store

__all__ = [
    "get_run",
    "iterations",
    "list_runs",
    "load_result",
    "logs",
    "resume_point",
    "task_runs",
]

Store = RunStore | str | None


def list_runs(
    limit: int | None = 20,
    flow_name: str | None = None,
    state: str | None = None,
    *,
    store: Store = None,
) -> list[RunInfo]:
    """The most recent runs, newest first: :meth:`RunStore.list_runs`."""
    with using_store(store) as st:
        return st.list_runs(limit, flow_name, state)


def get_run(run_id: str, *, store: Store = None) -> RunInfo:
    """One run, by id or unique id prefix: :meth:`RunStore.get_run`."""
    with using_store(store) as st:
        return st.get_run(run_id)


def task_runs(run_id: str, *, store: Store = None) -> list[TaskRunInfo]:
    """The task runs of a run, in the order they started: :meth:`RunStore.task_runs`."""
    with using_store(store) as st:
        return st.task_runs(run_id)


def iterations(
    run_id: str, task: str, map_index: int | None = None, *, store: Store = None
) -> list[IterationRecord]:
    """The recorded history of one task run: :meth:`RunStore.iterations`."""
    with using_store(store) as st:
        return st.iterations(run_id, task, map_index)


def logs(
    run_id: str, task: str | None = None, *, after: int | None = None, store: Store = None
) -> list[LogEntry]:
    """The log lines of a run, in order: :meth:`RunStore.logs`."""
    with using_store(store) as st:
        return st.logs(run_id, task, after=after)


def load_result(result_id: int, *, store: Store = None) -> Any:
    """Load (unpickle) one recorded value: :meth:`RunStore.load_result`."""
    with using_store(store) as st:
        return st.load_result(result_id)


def resume_point(
    run_id: str, *, identities: dict[str, str] | None = None, store: Store = None
) -> ResumePoint:
    """What a resumed run already has: :meth:`RunStore.resume_point`."""
    with using_store(store) as st:
        return st.resume_point(run_id, identities=identities)
