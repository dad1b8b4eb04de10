"""Text a database driver refuses, written otherwise instead of failing the run's recording.

Two kinds, each only ever in text for people to read (a label, a message, a
log line, a task run's name; results go as bytes):

- a lone surrogate (``"\\udcff"``: ``os.listdir`` and ``sys.argv`` decode a file
  name's undecodable bytes so): UTF-8 cannot encode one, so SQLite's and
  psycopg's drivers refuse the whole statement. An engine that met one writes
  it as its escape, ``\\udcff``, from then on, as ``repr`` would show it: its
  statements have their parameters cleaned where SQLAlchemy runs them (a
  ``before_cursor_execute`` hook) and where the writer runs its own on the
  DB-API cursor (:func:`iterflow.store.prepared.dbapi_cursor` hands out a
  :class:`CleaningCursor`);
- a NUL on PostgreSQL, whose text types cannot hold one: that engine's
  connections dump strings with U+FFFD in its place (:mod:`iterflow.store.pg_text`).
  SQLite keeps a NUL as it was given.

Neither costs anything until then (cleaning is a Python call per string):
:func:`iterflow.store.db.write` switches the engine when its driver refuses
such text, and runs the transaction again.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = [
    "CleaningCursor",
    "clean_text_from_now_on",
    "cleans_text",
    "nul_free_from_now_on",
    "refused_nul",
    "refused_surrogate",
]

# Engines that clean their text (see clean_text_from_now_on), and those whose
# connections write NUL-free text (see nul_free_from_now_on).
_CLEANING: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_NUL_FREE: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def cleans_text(engine: sa.Engine) -> bool:
    """Whether ``engine`` writes lone surrogates as escapes (after it met one)."""
    return bool(_CLEANING) and engine in _CLEANING


def refused_surrogate(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is UTF-8 refusing a lone surrogate."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, UnicodeEncodeError) and "surrogates not allowed" in str(found):
            return True
        found = getattr(found, "orig", None) or found.__cause__ or found.__context__
    return False


def clean_text_from_now_on(engine: sa.Engine) -> bool:
    """From now on ``engine`` writes lone surrogates as escapes; False if it did already."""
    if engine in _CLEANING:
        return False
    _CLEANING.add(engine)
    event.listen(engine, "before_cursor_execute", _cleaned_statement, retval=True)
    return True


def refused_nul(orig: BaseException) -> bool:
    """Whether the driver's error ``orig`` is PostgreSQL text refusing a NUL.

    psycopg refuses a str holding NUL in text format before sending it (a
    DataError of its own); in binary format the server does.
    """
    text = str(orig)
    return "cannot contain NUL" in text or ("invalid byte sequence" in text and "0x00" in text)


def nul_free_from_now_on(engine: sa.Engine, connection: sa.Connection | None) -> bool:
    """From now on ``engine`` writes NUL in text as U+FFFD; False if it did already.

    Also False for an engine not on psycopg (the error is something else then).
    ``connection``: a writer's own, taken from the pool long ago, switched at once.
    """
    if engine in _NUL_FREE or engine.dialect.driver != "psycopg":
        return False
    from iterflow.store.pg_text import use_nul_free_text

    _NUL_FREE.add(engine)
    # Every connection as it is taken from the pool, the ones made before included.
    event.listen(engine, "checkout",
                 lambda dbapi_connection, *_: use_nul_free_text(dbapi_connection))
    if connection is not None:
        use_nul_free_text(connection.connection.driver_connection)
    return True


def clean(value: Any) -> Any:
    """``value``, a ``str`` with lone surrogates as backslash escapes; anything else as is."""
    if type(value) is str and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def clean_parameters(parameters: Any) -> Any:
    """One statement's parameters (a tuple, list or mapping), each cleaned."""
    if isinstance(parameters, dict):
        return {key: clean(value) for key, value in parameters.items()}
    if isinstance(parameters, (tuple, list)):
        return type(parameters)(clean(value) for value in parameters)
    return parameters


def _cleaned_statement(conn: Any, cursor: Any, statement: str, parameters: Any,
                       context: Any, executemany: bool) -> tuple[str, Any]:
    if executemany:
        return statement, [clean_parameters(p) for p in parameters]
    return statement, clean_parameters(parameters)


class CleaningCursor:
    """A DB-API cursor whose statements (and ``COPY`` rows) have their text cleaned."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, statement: str, parameters: Any = None) -> Any:
        return self._cursor.execute(statement, clean_parameters(parameters))

    def executemany(self, statement: str, seq_of_parameters: Any) -> Any:
        return self._cursor.executemany(statement,
                                        [clean_parameters(p) for p in seq_of_parameters])

    @contextlib.contextmanager
    def copy(self, statement: str) -> Iterator[Any]:
        """psycopg's ``COPY``: rows written through it are cleaned first."""
        with self._cursor.copy(statement) as copy:
            yield _CleaningCopy(copy)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CleaningCopy:
    def __init__(self, copy: Any) -> None:
        self._copy = copy

    def write_row(self, row: Any) -> None:
        self._copy.write_row(clean_parameters(row))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._copy, name)
