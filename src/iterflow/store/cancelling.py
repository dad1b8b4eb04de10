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

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store.liveness import LIVE, run_info
from iterflow.store.lookup import find_run
from iterflow.store.runstore import RunStore, using_store
from iterflow.store.schema import cancel_requests, flow_run_parents, flow_runs

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
                    conn.execute(
                        sa.update(flow_runs).where(flow_runs.c.run_id == row.run_id).values(
                            state="Cancelled", ended=time.time(),
                            message="cancelled (iterflow cancel; its process had gone)",
                        )
                    )
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
