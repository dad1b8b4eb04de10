"""Wake-up times ``iterflow.sleep`` recorded, read back for a resumed run.

A sleeping task records its wake-up time as a log line of its task run and
iteration (:mod:`iterflow.durable`). A resume hands them to the run's context,
so the same ``sleep`` call waits only what is left.

>>> recorded_sleeps(store, run_id)   # doctest: +SKIP
{'RUN/poll-1|1|0': 1765030000.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from iterflow.durable import parse_sleep, sleep_key
from iterflow.store.schema import flow_runs, logs, task_runs

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["recorded_sleeps", "sleeping_until"]


def recorded_sleeps(store: RunStore, run_id: str) -> dict[str, float]:
    """``{sleep_key: wake-up time}`` for every ``iterflow.sleep`` the run recorded."""
    query = (
        sa.select(task_runs.c.task_run_id, logs.c.loop_index, logs.c.message)
        .select_from(
            logs.join(flow_runs, flow_runs.c.id == logs.c.flow_run)
            .join(task_runs, task_runs.c.id == logs.c.task_run)
        )
        .where(flow_runs.c.run_id == run_id, logs.c.message.startswith("sleeping until "))
        .order_by(logs.c.id)
    )
    found: dict[str, float] = {}
    for task_run_id, loop_index, message in store.read(lambda conn: conn.execute(query).all()):
        parsed = parse_sleep(message)
        if parsed is not None:
            wake, call = parsed
            found[sleep_key(task_run_id, loop_index, call)] = wake  # the latest wins
    return found


def sleeping_until(store: RunStore, run_id: str) -> dict[str, float]:
    """``{task_run_id: wake-up time}`` of the task runs of ``run_id`` asleep now.

    A task run is asleep when it is ``Running`` and its latest log line is a
    wake-up time still ahead (``iterflow show`` says "sleeping until 14:05").
    """
    query = (
        sa.select(task_runs.c.task_run_id, logs.c.message)
        .select_from(
            logs.join(flow_runs, flow_runs.c.id == logs.c.flow_run)
            .join(task_runs, task_runs.c.id == logs.c.task_run)
        )
        .where(flow_runs.c.run_id == run_id, task_runs.c.state == "Running")
        .order_by(logs.c.id)
    )
    latest: dict[str, str] = {}
    for task_run_id, message in store.read(lambda conn: conn.execute(query).all()):
        latest[task_run_id] = message
    now_asleep: dict[str, float] = {}
    for task_run_id, message in latest.items():
        parsed = parse_sleep(message)
        if parsed is not None:
            now_asleep[task_run_id] = parsed[0]
    return now_asleep
