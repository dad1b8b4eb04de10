"""Deleting recorded runs: the store otherwise only grows.

A run is deleted whole, in one transaction: its flow run row, task runs,
states, log lines and results, and afterwards its result files. A run that
is still alive (``Running`` or ``Pending`` with a live process and a fresh
heartbeat) is refused, as :meth:`~iterflow.store.runstore.RunStore.check_resumable`
refuses to resume one. The flow's definition (``flows``) stays.

>>> from iterflow.store import delete_run, runs_older_than   # doctest: +SKIP
>>> for run_id in runs_older_than(days=30):                  # doctest: +SKIP
...     delete_run(run_id)
"""

from __future__ import annotations

import shutil
import time

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store.liveness import LIVE, run_info
from iterflow.store.lookup import find_run
from iterflow.store.runstore import RunStore, using_store
from iterflow.store.schema import (
    cancel_requests,
    flow_run_parents,
    flow_run_shapes,
    flow_runs,
    logs,
    metrics,
    results,
    state_transitions,
    task_runs,
)

__all__ = ["delete_run", "runs_older_than"]


def delete_run(run_id: str, *, store: RunStore | str | None = None) -> str:
    """Delete one run (by id or unique prefix) and everything recorded for it; return its id.

    Raises :class:`~iterflow.errors.StoreError` for an unknown run, and for a
    run that is still alive (stop it first; a crashed one may be deleted).
    """
    with using_store(store) as st:

        def delete(conn: sa.Connection) -> str:
            row = find_run(conn, run_id, st.name, for_update=True)
            info = run_info(row, st.stale_after)
            if info.state in LIVE:
                where = f" (process {row.pid} on {row.host})" if row.pid else ""
                raise StoreError(
                    f"Run {row.run_id} of flow {row.flow_name!r} is still {info.state.lower()}"
                    f"{where}; stop it before deleting it."
                )
            mine = sa.select(task_runs.c.id).where(task_runs.c.flow_run_id == row.run_id)
            # Through the task_run index (and the few flow-level rows), not a table scan.
            states = sa.or_(
                state_transitions.c.task_run.in_(mine),
                sa.and_(
                    state_transitions.c.task_run.is_(None),
                    state_transitions.c.flow_run == row.id,
                ),
            )
            kept = sa.select(state_transitions.c.result_id).where(
                states, state_transitions.c.result_id.is_not(None)
            )
            result_ids = [r for (r,) in conn.execute(kept)]
            if row.parameters_result_id is not None:
                result_ids.append(row.parameters_result_id)
            conn.execute(sa.delete(state_transitions).where(states))
            conn.execute(sa.delete(logs).where(logs.c.flow_run == row.id))
            conn.execute(sa.delete(metrics).where(metrics.c.flow_run == row.id))
            conn.execute(sa.delete(task_runs).where(task_runs.c.flow_run_id == row.run_id))
            for start in range(0, len(result_ids), 500):
                chunk = result_ids[start : start + 500]
                conn.execute(sa.delete(results).where(results.c.id.in_(chunk)))
            conn.execute(sa.delete(flow_run_shapes).where(
                flow_run_shapes.c.run_id == row.run_id))
            conn.execute(sa.delete(cancel_requests).where(
                cancel_requests.c.run_id == row.run_id))
            conn.execute(sa.delete(flow_runs).where(flow_runs.c.run_id == row.run_id))
            # Its own link to a parent, and its children's to it: they become top-level
            # runs, listed by `iterflow runs` and deletable in their turn.
            conn.execute(sa.delete(flow_run_parents).where(sa.or_(
                flow_run_parents.c.run_id == row.run_id,
                flow_run_parents.c.parent_run_id == row.run_id,
            )))
            return str(row.run_id)

        deleted = st.write(delete)
        # Files only once the rows are gone: a crash in between leaves files, never
        # rows pointing at missing files.
        shutil.rmtree(st.run_results_dir(deleted), ignore_errors=True)
        return deleted


def runs_older_than(
    days: float, *, state: str | None = None, store: RunStore | str | None = None
) -> list[str]:
    """Ids of the finished runs that started more than ``days`` ago (oldest first).

    Live runs are left out; ``state`` keeps only runs in that state (as shown,
    so ``"Crashed"`` works).
    """
    cutoff = time.time() - days * 86400
    with using_store(store) as st:
        listed = st.list_runs(limit=None, state=state)
    found = [
        run for run in listed
        if run.started is not None and run.started < cutoff and run.state not in LIVE
    ]
    return [run.run_id for run in sorted(found, key=lambda r: r.started or 0.0)]
