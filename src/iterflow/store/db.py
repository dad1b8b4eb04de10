"""Connections to the store's database: engine set-up, write transactions, retries.

SQLite needs care to be safe with several processes writing at once:

* WAL mode (set once per file by :func:`iterflow.store.migrations.prepare`): readers
  never block the writer and the writer never blocks readers.
* ``synchronous=NORMAL``: in WAL mode a commit survives the process being
  killed (SIGKILL), only a power cut may lose the last commits — the same
  promise the rest of the store makes.
* We emit ``BEGIN`` ourselves (pysqlite's own transaction handling is turned
  off), and a write transaction starts with ``BEGIN IMMEDIATE``: it takes the
  write lock up front, so waiting for it is handled by SQLite's busy timeout.
  A deferred transaction that reads and then tries to write can fail with
  "database is locked" at once, without waiting, when another process
  committed in between.
* "database is locked" that outlasts the busy timeout is retried with back-off
  until the store's ``lock_timeout``; only then is it an error.

Read-only stores (read-only media, another user's home): a reader that
cannot write the file or its directory opens it with SQLite's ``mode=ro``
(:func:`read_only_url`), which needs the ``-shm`` file of a WAL database to
exist already (it does while the owner's process has the store open); when it
does not, and cannot be made, the file is opened ``immutable=1``, which needs
no ``-shm`` at all and reads what the last writer left. A writer refuses such a
store up front (:func:`check_writable`), before a run starts, rather than
failing at its first write with "unable to open database file".

Errors leave this module as :class:`~iterflow.errors.StoreError` naming the
store and saying what to do. A failed transaction is rolled back whole, so what
was committed before it is never touched.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from iterflow.errors import StoreError
from iterflow.store.clean_text import (
    clean_text_from_now_on,
    nul_free_from_now_on,
    refused_nul,
    refused_surrogate,
)

__all__ = [
    "check_writable",
    "create_engine",
    "describe_error",
    "display_url",
    "read",
    "read_only_url",
    "set_wal",
    "sqlite_path",
    "sqlite_writable",
    "write",
    "write_connection",
]

T = TypeVar("T")

#: Execution option that makes the SQLite begin hook take the write lock.
_WRITE_OPTION = "iterflow_write"
# Longest single wait inside SQLite; beyond it our own loop retries, so that a
# short lock_timeout (tests) is honoured and a long one still retries.
_BUSY_SLICE = 5.0
# PostgreSQL errors worth retrying: serialization failure, deadlock, lock not available.
_PG_RETRY = frozenset({"40001", "40P01", "55P03"})


def display_url(url: str | URL) -> str:
    """The URL as it may be shown in a message: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> str | None:
    """The file of a SQLite URL (``None`` for other databases)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return u.database or ""


def sqlite_writable(path: str) -> bool:
    """Whether this process may write the SQLite file and create files beside it.

    SQLite in WAL mode needs both: the ``-wal`` and ``-shm`` files are made in
    the file's directory. A directory that does not exist yet counts as
    writable (opening reports what is wrong with it).
    """
    file = Path(path).expanduser()
    directory = file.parent
    if not directory.exists():
        return True
    if file.exists() and not os.access(file, os.W_OK):
        return False
    return os.access(directory, os.W_OK)


def read_only_message(name: str) -> str:
    """What to say about a store this process cannot write."""
    return (
        f"the store at {name} is read-only; set ITERFLOW_HOME or ITERFLOW_STORE_URL to a "
        f"store you can write"
    )


def check_writable(path: str, name: str) -> None:
    """Raise :class:`StoreError` when the SQLite store at ``path`` cannot be written here."""
    if not sqlite_writable(path):
        raise StoreError(read_only_message(name))


def read_only_url(path: str) -> str:
    """A URL that opens the SQLite file at ``path`` for reading only (see module docstring).

    ``mode=ro`` when SQLite can read the file that way here; else ``immutable=1``.
    """
    file = str(Path(path).expanduser().resolve())
    uri = f"file:{quote(file)}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            probe.close()
    except sqlite3.Error:
        # A WAL database whose -shm is missing and cannot be created: only an
        # immutable open reads it (and sees what was checkpointed into the file).
        uri = f"file:{quote(file)}?immutable=1"
    return f"sqlite:///{uri}&uri=true"


def set_wal(engine: sa.Engine, name: str, lock_timeout: float) -> None:
    """Put the SQLite file behind ``engine`` in WAL mode (it stays so), or raise StoreError."""
    # journal_mode cannot change inside a transaction, so use the raw DB-API
    # connection (autocommit: pysqlite's BEGIN handling is off, see db.py).
    # Switching a new file to WAL while another process creates the store in it
    # can be refused at once ("database is locked": SQLite does not wait on the
    # busy handler there), so it is tried again until the lock timeout.
    deadline = time.monotonic() + lock_timeout
    while True:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            cursor.close()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise StoreError(describe_error(exc, name, lock_timeout=lock_timeout)) from exc
        finally:
            raw.close()
        time.sleep(0.01)
    if str(mode).lower() != "wal":
        raise StoreError(f"The run store {name} cannot use SQLite's WAL mode (got {mode!r}).")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from pysqlite: _sqlite_begin emits it (see module docstring).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Straight to the DB-API connection: this runs once per transaction, and
    # going through conn.exec_driver_sql costs more than the BEGIN itself.
    write = conn.get_execution_options().get(_WRITE_OPTION)
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine(url: str, *, lock_timeout: float, pooled: bool = True) -> sa.Engine:
    """An engine for ``url``, set up for the store (see the module docstring).

    ``pooled=False``: every connection is a new one, closed for good when given
    back (for connections a writer keeps).
    """
    pool = {} if pooled else {"poolclass": sa.pool.NullPool}
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        database = u.database or ""
        if database in ("", ":memory:") or u.query.get("mode") == "memory":
            raise StoreError(
                f"The run store cannot be an in-memory SQLite database ({url!r}): the "
                f"background writer and readers would each see their own empty database. "
                f"Use a file (sqlite:///path/to/iterflow.db), or store=None to record nothing."
            )
        engine = sa.create_engine(
            u,
            connect_args={
                "timeout": min(lock_timeout, _BUSY_SLICE),
                # Pooled connections move between the caller's thread and the writer's.
                "check_same_thread": False,
            },
            **pool,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(u, pool_pre_ping=True, **pool)


def _retryable(orig: BaseException) -> bool:
    # psycopg 3 calls the code sqlstate, psycopg2 pgcode.
    if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in _PG_RETRY:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text


def describe_error(exc: BaseException, name: str, *, lock_timeout: float | None = None) -> str:
    """A message for a failed store operation: what happened, and what to do."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    lower = text.lower()
    if "locked" in lower or "busy" in lower:
        waited = f" for {lock_timeout:g} s" if lock_timeout is not None else ""
        return (
            f"The run store {name} stayed locked by another process{waited} ({text}). "
            f"Another program holds a long write transaction on it; close it, or raise "
            f"the store's lock_timeout. Everything committed before this point is kept."
        )
    disk_full = getattr(orig, "sqlstate", "") == "53100"  # PostgreSQL's disk_full
    if disk_full or "disk is full" in lower or "no space left" in lower:
        return (
            f"The run store {name} cannot be written: the disk is full ({text}). Free some "
            f"space and resume the run; everything committed before this point is kept."
        )
    if "not a database" in lower or "file is encrypted" in lower:
        return (
            f"{name} is not an iterflow run store: it is not a SQLite database ({text}). "
            f"Move the file aside, or point ITERFLOW_STORE_URL at another file."
        )
    if "readonly" in lower or "read-only" in lower or "permission" in lower or (
        "unable to open database file" in lower and os.path.isabs(name)
        and not sqlite_writable(name)
    ):
        return f"{read_only_message(name)} ({text})"
    return f"The run store {name} failed: {type(orig).__name__}: {text}"


def write_connection(engine: sa.Engine) -> sa.Connection:
    """A connection to keep for many :func:`write` calls (``connection=``).

    Checking a connection out of the pool and back costs about as much as a
    small transaction; a writer committing every iteration keeps one instead.
    """
    conn = engine.connect()
    conn.execution_options(**{_WRITE_OPTION: True})
    return conn


def write(
    engine: sa.Engine,
    fn: Callable[[sa.Connection], T],
    *,
    name: str,
    lock_timeout: float,
    connection: sa.Connection | None = None,
) -> T:
    """Run ``fn(conn)`` in one write transaction, retrying while the database is locked.

    ``fn`` may run more than once (each time in a fresh transaction), so it
    must build everything it writes from scratch. Any failure is rolled back
    and raised as :class:`StoreError`. ``connection`` (from
    :func:`write_connection`) is used instead of one from the pool.
    """
    deadline = time.monotonic() + lock_timeout
    delay = 0.005
    while True:
        try:
            if connection is not None:
                with connection.begin():
                    return fn(connection)
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    return fn(conn)
        except Exception as exc:
            # Text a driver refused: from now on that engine writes it otherwise (the
            # kept connection's is the one to switch: it may be an engine of its own),
            # and the same transaction runs again.
            writing = engine if connection is None else connection.engine
            if refused_surrogate(exc) and clean_text_from_now_on(writing):
                continue
            # The driver's own error comes unwrapped from the SQLite begin hook.
            if isinstance(exc, sa.exc.DBAPIError):
                orig: BaseException = exc.orig
            elif isinstance(exc, engine.dialect.loaded_dbapi.Error):
                orig = exc
            elif isinstance(exc, (sa.exc.SQLAlchemyError, OSError)):
                raise StoreError(describe_error(exc, name)) from exc
            else:
                raise
            if refused_nul(orig) and nul_free_from_now_on(writing, connection):
                continue
            if _retryable(orig) and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            raise StoreError(describe_error(exc, name, lock_timeout=lock_timeout)) from exc


def read(engine: sa.Engine, fn: Callable[[sa.Connection], T], *, name: str) -> T:
    """Run ``fn(conn)`` in a read transaction (one consistent snapshot)."""
    try:
        with engine.connect() as conn, conn.begin():
            return fn(conn)
    except StoreError:
        raise
    except Exception as exc:
        if isinstance(exc, sa.exc.SQLAlchemyError | engine.dialect.loaded_dbapi.Error):
            raise StoreError(describe_error(exc, name)) from exc
        raise
