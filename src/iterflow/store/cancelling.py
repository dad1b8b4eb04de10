"""Cancelling a run from another process: ``iterflow cancel RUN``.

:func:`request_cancel` writes a row to ``cancel_requests`` with the run's
current owner token. The process driving the run reads that table with each
heartbeat (:class:`~iterflow.store.batch.BatchRecorder`) and, finding its run
asked for, calls what the runtime registered for it with
:func:`~iterflow.store.cancel_watch.watch`: the
runner's ``stop``, which cancels the run as Ctrl-C does (loops stop at their
next iteration, jobs elsewhere are cancelled, the run ends ``Cancelled`` and
can be resumed). So the run stops within about two heartbeats.

The owner token makes a request apply to one drive of the run only: a resume
writes a new token, and the old request does not cancel it.

A run whose process is gone (see :mod:`~iterflow.store.liveness`) has nobody
to read the request: it is marked ``Cancelled`` at once.

>>> from iterflow.store import request_cancel     # doctest: +SKIP
>>> request_cancel("3f2a")                         # doctest: +SKIP
'requested'
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store.liveness import LIVE, run_info
from iterflow.store.lookup import find_run
from iterflow.store.runstore import RunStore, using_store
from iterflow.store.schema import (
    cancel_requests,
    flow_run_parents,
    flow_runs,
    state_transitions,
    task_runs,
)
from iterflow.store.statements import allocate_ids

__all__ = ["request_cancel"]


def request_cancel(run: str, *, store: RunStore | str | None = None) -> str:
    """Ask for run ``run`` (an id or a unique prefix) to be cancelled; say what happened.

    Returns ``"requested"`` when the run is alive: its driving process cancels
    it at its next heartbeat, as Ctrl-C would (it ends ``Cancelled`` and can
    be resumed). Returns ``"cancelled"`` when the run was recorded as running
    but its process is gone: it is marked ``Cancelled`` here and now.

    Raises :class:`~iterflow.errors.StoreError` for an unknown run, for one
    that has already finished (there is nothing to cancel), and for a live
    child run (a subflow): cancel its parent, and it stops with it.
    """
    with using_store(store) as st:

        def ask(conn: sa.Connection) -> str:
            row = find_run(conn, run, st.name, for_update=True)
            info = run_info(row, st.stale_after)
            if info.state not in LIVE:
                if row.state in LIVE:  # recorded live, but its process is gone
                    _cancel_dead_run(conn, row)
                    return "cancelled"
                raise StoreError(
                    f"Run {row.run_id} of flow {row.flow_name!r} has already finished "
                    f"({info.state}): there is nothing to cancel. `iterflow resume "
                    f"{row.run_id[:8]}` continues a failed or cancelled run."
                )
            parent = conn.execute(sa.select(flow_run_parents.c.parent_run_id).where(
                flow_run_parents.c.run_id == row.run_id)).scalar()
            if parent is not None:
                # A child run shares its parent's process and cancel flag: stopping it
                # alone would stop the parent's loops too. Cancel the whole run.
                raise StoreError(
                    f"Run {row.run_id} of flow {row.flow_name!r} is a child run (a subflow) "
                    f"of run {parent}: cancel that one (`iterflow cancel {parent[:8]}`); its "
                    f"child runs stop with it."
                )
            conn.execute(sa.delete(cancel_requests).where(
                cancel_requests.c.run_id == row.run_id))
            conn.execute(sa.insert(cancel_requests).values(
                run_id=row.run_id, owner=row.owner, requested=time.time()))
            return "requested"

        return st.write(ask)


#: Task-run states a run's driver would have closed had it not died.
_UNFINISHED = ("Pending", "Running", "Looped", "Retrying")


def _cancel_dead_run(conn: sa.Connection, row: Any) -> None:
    """Record ``Cancelled`` for a run whose process is gone, as its driver would have.

    The run and each task run it left unfinished end ``Cancelled``, each with a
    ``Cancelled`` row closing its history (a task run's at the iteration it was
    in), so ``show``, the dashboard and ``resume`` read it like a run stopped
    with Ctrl-C: a loop continues at its last recorded iteration.
    """
    now = time.time()
    why = "cancelled (iterflow cancel; its process had gone)"
    conn.execute(sa.update(flow_runs).where(flow_runs.c.run_id == row.run_id).values(
        state="Cancelled", ended=now, message=why))
    left = conn.execute(
        sa.select(task_runs.c.task_run_id, task_runs.c.id, task_runs.c.loop_index).where(
            task_runs.c.flow_run_id == row.run_id, task_runs.c.state.in_(_UNFINISHED))
    ).all()
    if left:
        conn.execute(
            sa.update(task_runs)
            .where(task_runs.c.task_run_id.in_([t.task_run_id for t in left]))
            .values(state="Cancelled", ended=now, message=why)
        )
    first = allocate_ids(conn, 1 + len(left))
    conn.execute(sa.insert(state_transitions), [
        {"id": first, "flow_run": row.id, "task_run": None, "kind": "Cancelled",
         "loop_index": None, "message": why, "time": now},
        *({"id": first + 1 + n, "flow_run": row.id, "task_run": t.id, "kind": "Cancelled",
           "loop_index": t.loop_index, "message": why, "time": now}
          for n, t in enumerate(left)),
    ])
