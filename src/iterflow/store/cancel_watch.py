"""The driving side of ``iterflow cancel``: which runs were asked to stop, and stopping them.

The runtime registers each run it drives with a store (:func:`watch`); the
store writer's heartbeat reads the run's cancel requests (:func:`cancel_asked`)
and passes what it found to :func:`asked`, which calls the run's ``stop``.
:mod:`~iterflow.store.cancelling` writes the requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from iterflow.store.prepared import Prepared
from iterflow.store.schema import cancel_requests

__all__ = ["asked", "cancel_asked", "watch"]

# Run id -> what stops it, for the runs this process drives (see watch()).
_WATCHED: dict[str, Callable[[str], None]] = {}
_LOCK = threading.Lock()


# Built once: building the Core statement per heartbeat cost more than running it
# (~0.3 ms; every run pays one with its first transaction). One run (a plain run's
# heartbeat) is a prepared statement on the DB-API cursor; several (a parent and its
# child runs) take any number of ids through SQLAlchemy, which caches the compiled form.
_ASKED_ONE = Prepared(
    lambda _dialect: sa.select(cancel_requests.c.run_id).where(
        cancel_requests.c.run_id == sa.bindparam("run_id", type_=sa.String),
        cancel_requests.c.owner == sa.bindparam("owner", type_=sa.String),
    ),
    ("run_id", "owner"),
)
_ASKED = sa.select(cancel_requests.c.run_id).where(
    cancel_requests.c.run_id.in_(sa.bindparam("run_ids", expanding=True)),
    cancel_requests.c.owner == sa.bindparam("owner"),
)


def cancel_asked(conn: sa.Connection, run_ids: list[str], owner: str) -> list[str]:
    """Which of ``run_ids``, driven under ``owner``, someone asked to cancel."""
    if len(run_ids) == 1:
        return [run_ids[0]] if _ASKED_ONE.first(conn, (run_ids[0], owner)) else []
    return [run_id for (run_id,) in conn.execute(_ASKED, {"run_ids": run_ids, "owner": owner})]


@contextmanager
def watch(run_id: str, stop: Callable[[str], None]) -> Iterator[None]:
    """While inside, a cancel request for ``run_id`` read by a heartbeat calls ``stop(why)``."""
    with _LOCK:
        _WATCHED[run_id] = stop
    try:
        yield
    finally:
        with _LOCK:
            if _WATCHED.get(run_id) is stop:
                del _WATCHED[run_id]


def asked(run_ids: Iterable[str]) -> None:
    """Stop the watched runs among ``run_ids`` (called by the heartbeat that read them)."""
    for run_id in run_ids:
        with _LOCK:
            stop = _WATCHED.get(run_id)
        if stop is not None:
            stop("cancelled by iterflow cancel")
