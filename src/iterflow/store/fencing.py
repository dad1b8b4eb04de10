"""Fencing: a writer stops once another process has claimed one of its runs.

Each run records the owner token of the sink that drives it; a resume
elsewhere writes its own. Before a batch is written,
:func:`check_owners` reads the owners of the runs the batch touches (locking
their rows on PostgreSQL) and raises :class:`~iterflow.errors.RunTakenOver`
if one is no longer ours, so that nothing of the batch is written.
"""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa

from iterflow.errors import RunTakenOver
from iterflow.store.liveness import HOST, driver_pid
from iterflow.store.schema import flow_runs
from iterflow.store.statements import dbapi_cursor, run_owner

__all__ = ["check_owners"]


def check_owners(conn: sa.Connection, owner: str, open_runs: dict[str, None],
                 run_ids: dict[str, None]) -> None:
    """Raise :class:`RunTakenOver` if another process has claimed one of ``run_ids``.

    ``owner`` is this writer's token; a run taken over leaves ``open_runs``
    (no more heartbeats for it). One run (a plain run's batch) is one prepared
    statement; many (a batch of child runs) are read a few hundred at a time,
    in a stable order so that two processes locking rows on PostgreSQL cannot
    wait on each other.
    """
    if len(run_ids) <= 1:
        for run_id in run_ids:
            _check(run_id, run_owner.first(conn, (run_id,)), owner, open_runs)
        return
    ordered = sorted(run_ids)
    sqlite = conn.dialect.name == "sqlite"
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        if sqlite:  # no row locks there; the Core statement cost more than the query
            found = _owners_sqlite(conn, chunk)
        else:
            found = conn.execute(
                sa.select(flow_runs.c.run_id, flow_runs.c.owner, flow_runs.c.pid,
                          flow_runs.c.host)
                .where(flow_runs.c.run_id.in_(chunk))
                .order_by(flow_runs.c.run_id)
                .with_for_update()
            ).all()
        for run_id, theirs, pid, host in found:
            _check(run_id, (theirs, pid, host), owner, open_runs)


def _check(run_id: str, row: Any, owner: str, open_runs: dict[str, None]) -> None:
    """Raise :class:`RunTakenOver` if ``row`` (owner, pid, host) says another owns it."""
    if row is None or row[0] is None or row[0] == owner:
        return  # a new run, one recorded before owners, or ours
    open_runs.pop(run_id, None)
    _owner, pid, host = row
    raise RunTakenOver(
        f"Run {run_id} was taken over by another process (pid {pid} on {host} resumed "
        f"it), so this process (pid {driver_pid()} on {HOST}) stopped driving it and "
        f"records nothing more for it. The run goes on there: `iterflow show "
        f"{run_id[:8]}` shows it."
    )


def _owners_sqlite(conn: sa.Connection, run_ids: list[str]) -> list[tuple[Any, ...]]:
    """(run id, owner, pid, host) of those of ``run_ids`` in the store, on SQLite.

    Padded with NULLs (which match nothing) to a power of two, so that SQLite
    prepares few distinct statements.
    """
    size = 8
    while size < len(run_ids):
        size *= 2
    marks = ", ".join(["?"] * size)
    with contextlib.closing(dbapi_cursor(conn)) as cursor:
        cursor.execute(
            f"SELECT run_id, owner, pid, host FROM flow_runs WHERE run_id IN ({marks})",
            (*run_ids, *[None] * (size - len(run_ids))),
        )
        return cursor.fetchall()
