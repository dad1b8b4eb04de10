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

from iterflow.store.schema import cancel_requests

__all__ = ["asked", "cancel_asked", "watch"]

# Run id -> what stops it, for the runs this process drives (see watch()).
_WATCHED: dict[str, Callable[[str], None]] = {}
_LOCK = threading.Lock()


def cancel_asked(conn: sa.Connection, run_ids: list[str], owner: str) -> list[str]:
    """Which of ``run_ids``, driven under ``owner``, someone asked to cancel."""
    query = sa.select(cancel_requests.c.run_id).where(
        cancel_requests.c.run_id.in_(run_ids),
        cancel_requests.c.owner == owner,
    )
    return [run_id for (run_id,) in conn.execute(query)]


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
