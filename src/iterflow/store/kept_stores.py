"""SQLite run stores that ``flow.run(store=URL)`` opened, kept between runs of one process.

A run given a store by URL (or the default store) used to open it and close
it again: a new engine, its first connection and SQLAlchemy's set-up of it,
the schema check and WAL mode, then disposing of it all — ~1.5 ms each time,
most of the fixed cost of a short run (a chain of 100 tasks: ~15 µs a link).
Now a run that ends hands its store back here (:func:`give_back`), and the
next run on the same file in this process takes it again (:func:`take`).

A kept store is taken again only while it still fits, else it is closed and
the run opens a fresh one, with the checks and messages of any open:

* the same process id, URL, results home (``$ITERFLOW_HOME``) — the key;
* the same file: its device and inode have not changed (a file moved aside
  or replaced at that path is another store), and it can still be written here;
* the same schema version: one query reads it (a newer iterflow in another
  process may have upgraded the store; an open would refuse to write to it).

Only SQLite stores are kept: a server database's connections are the server's
to count, and a process running flows now and then should not hold them. At
most :data:`KEEP` stores are kept, the ones given back last; all are closed
at interpreter exit (SQLite then tidies its ``-wal`` and ``-shm`` files).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

from iterflow.store import db

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["KEEP", "close_all", "give_back", "take"]

#: Stores kept at once (one per file; a process rarely runs flows on more).
KEEP = 4

# key -> (store, its SQLite file's path, (st_dev, st_ino) of that file when given back)
_kept: dict[tuple[Any, ...], tuple[RunStore, str, tuple[int, int]]] = {}
_lock = threading.Lock()
_closed = False  # set at exit: later give-backs close their store


def _key(url: str, home: Any) -> tuple[Any, ...]:
    return (os.getpid(), url, str(home))


def _file_of(store: RunStore) -> tuple[str, tuple[int, int]] | None:
    """The SQLite file of ``store`` and its device and inode; None: not a store to keep."""
    if store.read_only or store.engine.dialect.name != "sqlite":
        return None
    path = db.sqlite_path(store.url)
    if not path:
        return None
    path = os.path.expanduser(path)
    try:
        found = os.stat(path)
    except OSError:
        return None
    return path, (found.st_dev, found.st_ino)


def take(url: str) -> RunStore | None:
    """The store a run on ``url`` gave back in this process, if it still fits; else None."""
    from iterflow.store.runstore import default_home

    with _lock:
        entry = _kept.pop(_key(url, default_home()), None)
    if entry is None:
        return None
    store, path, file_id = entry
    if _still_fits(store, path, file_id):
        return store
    with contextlib.suppress(Exception):
        store.close()
    return None


def _still_fits(store: RunStore, path: str, file_id: tuple[int, int]) -> bool:
    """Whether ``store`` is still the store an open of its URL would give (module doc)."""
    try:
        found = os.stat(path)
        if (found.st_dev, found.st_ino) != file_id or not db.sqlite_writable(path):
            return False
        # Straight to a pooled DB-API connection (autocommit, see db._sqlite_connect):
        # a transaction through SQLAlchemy cost five times the query.
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            version = cursor.execute("SELECT version FROM schema_version").fetchone()
            cursor.close()
        finally:
            raw.close()
    except Exception:
        return False
    return version is not None and version[0] == store.schema_version


def give_back(store: RunStore) -> None:
    """Keep ``store`` (a run that ended opened it; its sinks are closed) for the next run.

    Or close it: not a SQLite file, or at exit. Another store kept for the same
    file (two runs at once) is closed, as is the oldest beyond :data:`KEEP`.
    """
    file = _file_of(store)
    dropped: list[RunStore] = []
    with _lock:
        if file is not None and not _closed:
            key = _key(store.url, store.home)
            previous = _kept.pop(key, None)
            if previous is not None:
                dropped.append(previous[0])  # two runs at once on one file: keep one
            _kept[key] = (store, *file)
            while len(_kept) > KEEP:
                oldest = next(iter(_kept))
                old_store = _kept.pop(oldest)[0]
                if oldest[0] == os.getpid():  # a forked child never closes its parent's
                    dropped.append(old_store)
        else:
            dropped.append(store)
    for old in dropped:
        with contextlib.suppress(Exception):
            old.close()


def close_all() -> None:
    """Close every store kept by this process (the next run opens its store again)."""
    with _lock:
        kept = [entry[0] for key, entry in _kept.items() if key[0] == os.getpid()]
        _kept.clear()
    for store in kept:
        with contextlib.suppress(Exception):
            store.close()


@atexit.register
def _at_exit() -> None:
    global _closed
    with _lock:
        _closed = True
    close_all()
