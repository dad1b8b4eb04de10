"""Run ids chosen by the caller: ``flow.run(run_id=ID)`` is idempotent.

A cron line or a CI job that names its run (``sync-2026-12-06``) can simply be
started again: :func:`claim_run_id` looks the id up and, in the same write
transaction, records a new run under it when there is none. Of two processes
starting the same new id at once, exactly one inserts the row; the other finds
it live (this host's pid) and is refused, as a resume of a live run is — also
when both looked before either inserted (its insert fails, and it looks again).

>>> existing = claim_run_id(store, "sync-2026-12-06", "sync", owner)  # doctest: +SKIP
>>> existing is None            # a new run, recorded as Running and ours  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.core.state import Skipped, State, Success
from iterflow.errors import RunNotResumable, StoreError
from iterflow.store.liveness import HOST, driving, run_info
from iterflow.store.records import RunInfo
from iterflow.store.schema import flow_runs, task_runs
from iterflow.store.statements import allocate_ids

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["FINISHED_WELL", "RECORDED", "claim_run_id", "recorded_result", "release_run_id"]

#: States of a run that ended well: starting its id again returns its result.
FINISHED_WELL = frozenset({"Success", "Skipped"})
#: The message of the state returned for such a run (nothing ran).
RECORDED = "finished earlier under this run id; its recorded result is returned, nothing ran"


# Built once: the claim is on every flow.run(run_id=...), and building costs more than running.
_FIND = (
    sa.select(flow_runs)
    .where(flow_runs.c.run_id == sa.bindparam("run_id", type_=sa.String))
    .with_for_update()
)
_INSERT = sa.insert(flow_runs)


def claim_run_id(store: RunStore, run_id: str, flow_name: str, owner: str) -> RunInfo | None:
    """Record a new run ``run_id`` of ``flow_name`` driven by ``owner``, or say what is there.

    Returns None when the id was new: the run is now recorded as ``Running``
    with this process's pid, host and ``owner`` (the token its sink writes
    under). Returns the existing run's :class:`RunInfo` otherwise (its
    ``state`` effective: a run whose process died is ``Crashed``). A run of
    another flow is refused with :class:`~iterflow.errors.RunNotResumable`.
    Only the exact id counts, never a prefix.
    """

    def claim(conn: sa.Connection) -> RunInfo | None:
        row = conn.execute(_FIND, {"run_id": run_id}).first()
        if row is None:
            now = time.time()
            conn.execute(_INSERT, {
                "run_id": run_id, "id": allocate_ids(conn, 1), "flow_name": flow_name,
                "state": "Running", "started": now, "pid": os.getpid(), "host": HOST,
                "heartbeat": now, "owner": owner,
            })
            return None
        info = run_info(row, store.stale_after)
        if info.flow_name != flow_name:
            raise RunNotResumable(
                f"Run id {run_id!r} is already used by a run of flow {info.flow_name!r} "
                f"({info.state}); flow {flow_name!r} cannot run under it. Choose another "
                f"run id (for example prefix it with {flow_name!r})."
            )
        return info

    try:
        info = store.write(claim)
    except StoreError as exc:
        if not isinstance(exc.__cause__, sa.exc.IntegrityError):
            raise
        # Another process inserted this new id between our look and our insert
        # (PostgreSQL locks no row that is not there yet): look again, it is there now.
        info = store.write(claim)
    if info is None:
        driving(run_id, owner, True)  # until its sink ends the run, or release_run_id()
    return info


def release_run_id(store: RunStore, run_id: str, owner: str) -> None:
    """Forget a run :func:`claim_run_id` recorded that never started.

    Only the row this ``owner`` inserted goes, and only while no task run was
    recorded for it: the id is free again for the next attempt.
    """
    driving(run_id, owner, False)

    def undo(conn: sa.Connection) -> None:
        started = conn.execute(
            sa.select(task_runs.c.task_run_id).where(task_runs.c.flow_run_id == run_id).limit(1)
        ).first()
        if started is None:
            conn.execute(sa.delete(flow_runs).where(
                flow_runs.c.run_id == run_id, flow_runs.c.owner == owner
            ))

    store.write(undo)


def recorded_result(store: RunStore, flow: Any, info: RunInfo) -> State:
    """The final :class:`~iterflow.core.state.State` of a run that finished well.

    ``result`` maps each task the run recorded as finished to its final state,
    its result loaded, as ``flow.run()`` returns it; nothing runs.
    """
    point = store.resume_point(info.run_id)
    results: dict[Any, State] = {}
    for task in flow.tasks:
        state = point.finished.get((task.slug, None))
        if state is not None:
            results[task] = state
    cls = Success if info.state == "Success" else Skipped
    state: State = cls(RECORDED)
    state.result = results
    state.run_id = info.run_id
    return state
