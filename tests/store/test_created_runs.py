"""Task runs of a run the writer created are not looked up when they start; all else is.

A task run that starts (its Running) in a batch, of a flow run this recorder
inserted and that has not ended, cannot have a row yet: the writer gives it a
key without asking the store. Everything else that has no key here is looked
up: a straggler of a task run whose key left when it ended, any task run of a
run recorded before (a resume), of a run another recorder created.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from iterflow.store import batch as batch_module
from iterflow.store import open_store, statements
from iterflow.store.batch import FLOW, LOG, ROLE_END_STRICT, ROLE_START, TASK, BatchRecorder
from iterflow.store.schema import logs, state_transitions, task_runs

OWNER = "a" * 32


def flow(run_id: str, kind: str, at: float, finished: bool = False) -> tuple:
    return (FLOW, run_id, "f", kind, at, None, None, None, None, None, finished, None, None)


def task(run_id: str, slug: str, kind: str, role: int, at: float) -> tuple:
    return (TASK, run_id, f"{run_id}/{slug}", slug, slug, None, 0, kind, role, at, None, None,
            None, None, None, None, None, None)


def log(run_id: str, slug: str, message: str, at: float) -> tuple:
    return (LOG, run_id, f"{run_id}/{slug}", slug, None, 0, 20, message, at, None)


class Asked:
    """The task run ids the recorder looks up in the store, batch by batch."""

    def __init__(self, monkeypatch: Any) -> None:
        self.names: list[list[str]] = []
        real = statements.find_keys

        def find_keys(conn, table, name, wanted):
            if table is task_runs:
                self.names.append(list(wanted))
            return real(conn, table, name, wanted)

        monkeypatch.setattr(batch_module, "find_keys", find_keys)

    def take(self) -> list[str]:
        names = [n for batch in self.names for n in batch]
        self.names.clear()
        return names


def keys(store, table: sa.Table, column: sa.Column) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(column).select_from(table).order_by(table.c.id))
                    .scalars())


def test_a_created_runs_starting_task_runs_are_not_looked_up_its_stragglers_are(
    store_url, monkeypatch
):
    asked = Asked(monkeypatch)
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner=OWNER)
        # The run's first batch: it is created here, and so is its task run.
        recorder.commit([flow("r", "Running", 1.0), task("r", "a", "Running", ROLE_START, 2.0)],
                        2)
        assert asked.take() == []
        # A later batch: the run was created by this recorder, "b" starts here.
        recorder.commit([task("r", "a", "Success", ROLE_END_STRICT, 3.0),
                         task("r", "b", "Running", ROLE_START, 4.0),
                         task("r", "b", "Success", ROLE_END_STRICT, 5.0)], 3)
        assert asked.take() == []
        # "a" ended, its key is gone: a line it logs late is looked up, and lands on it.
        recorder.commit([log("r", "a", "late", 6.0)], 1)
        assert asked.take() == ["r/a"]
        a_key = keys(store, task_runs, task_runs.c.id)[0]
        assert keys(store, logs, logs.c.task_run) == [a_key]
        assert keys(store, task_runs, task_runs.c.task_run_id) == ["r/a", "r/b"]
    finally:
        store.close()


def test_task_runs_of_runs_not_created_here_are_looked_up(store_url, monkeypatch):
    asked = Asked(monkeypatch)
    store = open_store(store_url)
    try:
        first = BatchRecorder(store.write, 30.0, owner=OWNER)
        first.commit([flow("r", "Running", 1.0), task("r", "a", "Running", ROLE_START, 2.0),
                      task("r", "a", "Retrying", 3, 3.0)], 3)
        first.commit([flow("r", "Failed", 4.0, finished=True)], 1)
        asked.take()
        # The same recorder, the run again (ended, so no longer "created here"): its
        # task run's Running is looked up and keeps its row and key.
        first.commit([flow("r", "Running", 5.0), task("r", "a", "Running", ROLE_START, 6.0)],
                     2)
        assert asked.take() == ["r/a"]
        # Another recorder (a resume in another process, same owner for the test).
        second = BatchRecorder(store.write, 30.0, owner=OWNER)
        second.commit([task("r", "a", "Success", ROLE_END_STRICT, 7.0),
                       task("r", "c", "Running", ROLE_START, 8.0)], 2)
        assert asked.take() == ["r/a", "r/c"]
        assert keys(store, task_runs, task_runs.c.task_run_id) == ["r/a", "r/c"]
        a_key = keys(store, task_runs, task_runs.c.id)[0]
        with store.engine.connect() as conn:
            a_rows = conn.execute(sa.select(sa.func.count()).where(
                state_transitions.c.task_run == a_key)).scalar_one()
        assert a_rows == 4  # Running, Retrying, Running, Success: all on one key
    finally:
        store.close()
