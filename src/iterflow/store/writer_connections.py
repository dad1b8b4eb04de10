"""SQLite writer connections kept between runs of one process, by store file.

SQLite compiles each statement once per connection, and the writer's padded
multi-row ``INSERT`` statements (:class:`~iterflow.store.statements.FastInsert`)
are big: up to ~20 ms to compile the largest. A run's writer used to start
from a fresh connection, so every run paid that again — for a short run most
of its recording cost (a map of 10,000 children: ~90 ms; a 3,000-iteration
loop block: ~110 ms). When a writer ends well, its connection waits here, and
the next writer on the same file in this process takes it back, compiled
statements and all.

A connection is kept only for the file it was opened on: the key holds the
file's device and inode (while the connection is open the file cannot be
freed, so a new file at that path has another inode) with the process id (a
forked child never uses its parent's connections) and the lock timeout it
was set up with. At most :data:`KEEP` wait per key, for the :data:`FILES`
files given back to most recently (a process that writes to many files in
turn, a test suite or one store per tenant, would otherwise keep three open
descriptors per file it ever wrote); all are closed at interpreter exit, so
SQLite tidies its ``-wal`` and ``-shm`` files as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from iterflow.store.runstore import RunStore

__all__ = ["FILES", "KEEP", "give_back", "take"]

#: Idle connections kept per store file (two writers at once are rare: a parent
#: run's subflows borrow its sink).
KEEP = 2
#: Store files whose connections are kept: those given back to most recently.
FILES = 4

_idle: OrderedDict[tuple[Any, ...], list[sa.Connection]] = OrderedDict()  # oldest first
_lock = threading.Lock()
_closed = False  # set at exit: later give-backs close their connection


def _key(store: RunStore) -> tuple[Any, ...] | None:
    """What a kept connection must match, or None when none is kept (not a SQLite file)."""
    if store.engine.dialect.name != "sqlite":
        return None
    path = store.engine.url.database
    if not path:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (os.getpid(), found.st_dev, found.st_ino, store.lock_timeout)


def take(store: RunStore) -> sa.Connection | None:
    """A connection a writer on ``store``'s file left here, or None."""
    key = _key(store)
    if key is None:
        return None
    with _lock:
        idle = _idle.get(key)
        return idle.pop() if idle else None


def give_back(store: RunStore, conn: sa.Connection) -> None:
    """Keep ``conn``, a writer's connection to ``store`` that ended well, for the next one."""
    key = _key(store)
    to_close = [conn]
    if key is not None and not _closed and not conn.invalidated and not conn.in_transaction():
        with _lock:
            idle = _idle.setdefault(key, [])
            _idle.move_to_end(key)
            if len(idle) < KEEP:
                idle.append(conn)
                to_close.clear()
            while len(_idle) > FILES:  # the file written to least recently goes
                to_close += _idle.popitem(last=False)[1]
    for idle_conn in to_close:
        with contextlib.suppress(Exception):
            idle_conn.close()


@atexit.register
def _close_all() -> None:
    global _closed
    with _lock:
        _closed = True
        kept = [conn for idle in _idle.values() for conn in idle]
        _idle.clear()
    for conn in kept:
        with contextlib.suppress(Exception):
            conn.close()
