"""Text no database can encode: lone surrogates, written as backslash escapes instead.

A ``str`` may hold a lone surrogate (``"\\udcff"``): ``os.listdir`` and
``sys.argv`` decode a file name's undecodable bytes so (``surrogateescape``).
UTF-8 cannot encode one, so SQLite's and psycopg's drivers refuse the whole
statement, and with it the batch and the run's recording. Such text only ever
is something for people to read (a label, a message, a log line, a task run's
name: results go as bytes), so an engine that met one writes it as
``\\udcff`` from then on, as ``repr`` would show it.

It costs nothing until then: :func:`iterflow.store.db.write` calls
:func:`clean_text_from_now_on` when a driver refuses a surrogate, and runs the
transaction again. Afterwards the engine's statements have their parameters
cleaned both where SQLAlchemy runs them (a ``before_cursor_execute`` hook)
and where the writer runs its own on the DB-API cursor
(:func:`iterflow.store.prepared.dbapi_cursor` hands out a :class:`CleaningCursor`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["CleaningCursor", "clean_text_from_now_on", "cleans_text", "refused_surrogate"]

# Engines that clean their text (see clean_text_from_now_on).
_CLEANING: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


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
