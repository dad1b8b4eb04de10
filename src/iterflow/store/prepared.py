"""How the store's writer runs SQL: compiled once, bound as tuples, many rows a statement.

:class:`Prepared` is a SQLAlchemy Core statement compiled once per dialect and
run on the transaction's DB-API cursor with plain tuples;
:class:`FastInsert` puts many rows in few statements (a padded multi-row
``INSERT`` on SQLite, ``COPY`` on PostgreSQL); :func:`upsert_statement` and
:func:`upsert` are the ``INSERT ... ON CONFLICT DO UPDATE`` that follow a
table's update rules (``"new"``, ``"old"``, ``"new_or_old"``), with a portable
fallback. The statements themselves are in :mod:`iterflow.store.statements`.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import sqlite3
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from iterflow.store.clean_text import CleaningCursor, cleans_text

__all__ = [
    "NATIVE_UPSERT",
    "FastInsert",
    "Prepared",
    "dbapi_cursor",
    "sqlite_variable_limit",
    "upsert",
    "upsert_statement",
]

# SQLite's limit on the variables of one statement: 32766 by default since 3.32, 999 before.
_SQLITE_DEFAULT_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


class Prepared:
    """A Core statement compiled once per dialect, then run with plain tuples.

    ``conn.execute(statement, params)`` spends tens of microseconds per call
    (cache keys, parameter processing) and a few more per row; for what the
    writer runs in every transaction — the per-iteration inserts, the result
    ids, the ``task_runs`` upsert — that was most of its cost, and with
    ``checkpoint="every"`` a transaction per iteration. The statement is still
    built and compiled by SQLAlchemy for the dialect; only plain values (str,
    int, float, bytes, None) go through, which need no processing. It runs on
    the transaction's DB-API cursor: ``exec_driver_sql`` still costs ~20 µs a
    statement, which ``checkpoint="every"`` pays several times per iteration.
    Driver errors come out unwrapped; :func:`iterflow.store.db.write` handles both.
    """

    def __init__(self, build: Callable[[str], Any], columns: tuple[str, ...]) -> None:
        self.build = build  # dialect name -> statement
        self.columns = columns
        self._compiled: dict[str, tuple[str, list[int] | None]] = {}

    def _prepare(self, dialect: sa.Dialect) -> tuple[str, list[int] | None]:
        entry = self._compiled.get(dialect.name)
        if entry is None:
            compiled = self.build(dialect.name).compile(
                dialect=dialect, column_keys=list(self.columns), for_executemany=True
            )
            order = None
            if compiled.positional:
                order = [self.columns.index(name) for name in compiled.positiontup or ()]
            entry = self._compiled[dialect.name] = (str(compiled), order)
        return entry

    def _params(self, rows: list[tuple[Any, ...]], order: list[int] | None) -> list[Any]:
        if order is None:  # a named paramstyle (psycopg)
            return [dict(zip(self.columns, row)) for row in rows]
        if order == list(range(len(self.columns))):
            return rows
        return [tuple(row[i] for i in order) for row in rows]

    def run(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Execute for every row (``executemany``)."""
        if rows:
            sql, order = self._prepare(conn.dialect)
            params = self._params(rows, order)
            with contextlib.closing(dbapi_cursor(conn)) as cursor:
                if len(params) == 1:
                    cursor.execute(sql, params[0])
                else:
                    cursor.executemany(sql, params)

    def scalar(self, conn: sa.Connection, row: tuple[Any, ...]) -> Any:
        """Execute once; the first column of the one row it returns."""
        return self.first(conn, row)[0]

    def first(self, conn: sa.Connection, row: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Execute once; the first row it returns, or ``None``."""
        sql, order = self._prepare(conn.dialect)
        with contextlib.closing(dbapi_cursor(conn)) as cursor:
            cursor.execute(sql, self._params([row], order)[0])
            found = cursor.fetchone()
        return None if found is None else tuple(found)


def sqlite_variable_limit(conn: sa.Connection) -> int:
    """How many ``?`` one statement may have on this SQLite connection."""
    raw = conn.connection.driver_connection
    try:
        return int(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    except AttributeError:  # Python < 3.11 has no getlimit
        return _SQLITE_DEFAULT_VARIABLES


def dbapi_cursor(conn: sa.Connection) -> Any:
    """A DB-API cursor in ``conn``'s transaction (see :class:`Prepared`).

    One that cleans its text once the engine has met a lone surrogate
    (:mod:`iterflow.store.clean_text`).
    """
    cursor = conn.connection.driver_connection.cursor()
    if cleans_text(conn.engine):
        return CleaningCursor(cursor)
    return cursor


class FastInsert(Prepared):
    """``INSERT`` of many rows; on SQLite one statement per batch, on PostgreSQL a ``COPY``.

    Each statement the writer runs costs it a trip through the GIL: pysqlite
    releases it while SQLite works and must then wait for the task's thread
    to give it back (up to the interpreter's switch interval, 5 ms). So on
    SQLite the rows go in as one ``INSERT ... SELECT ... FROM (VALUES (...),
    (...))`` of a fixed size — a power of two, so few statements are prepared —
    with the unused places padded with rows of integer zeros that ``WHERE
    column1 IS NOT 0`` drops. The first column must therefore never be the
    integer 0 (it is an id from 1 up, or a text key). Zeros rather than NULLs:
    the sqlite3 module binds an ``int`` in ~50 ns, but for ``None`` (and
    ``bytes``) it first looks for an adapter, ~650 ns with the GIL held, and a
    batch pads up to half its places.

    ``fixed`` gives columns the same value in every row (a kind, NULLs): on
    SQLite they are written into the statement as literals, because binding a
    parameter costs about as much as storing it, and most of a ``Looped``
    row's columns are always NULL.

    ``upsert=(key, rules)`` makes it an ``INSERT ... ON CONFLICT (key) DO
    UPDATE`` following ``rules`` (see :data:`TASK_RUN_RULES`).
    """

    _SMALLEST = 8

    def __init__(
        self,
        table: sa.Table,
        columns: tuple[str, ...],
        fixed: dict[str, str | None] | None = None,
        *,
        upsert: tuple[str, dict[str, str]] | None = None,
    ) -> None:
        self.fixed = dict(fixed or {})
        self._fixed_values = tuple(self.fixed.values())
        if upsert is None:
            build: Callable[[str], Any] = lambda _dialect: table.insert()  # noqa: E731
        else:
            build = lambda dialect: upsert_statement(table, dialect, *upsert)  # noqa: E731
        super().__init__(build, columns + tuple(self.fixed))
        self.bound = columns
        self.table = table
        self.upsert = upsert
        self._multi: dict[int, tuple[str, tuple[int, ...]]] = {}

    def _chunk(self, conn: sa.Connection) -> int:
        """Rows per statement: a power of two, at most 2,048, within the variable limit."""
        fits = max(sqlite_variable_limit(conn) // len(self.bound), 1)
        return min(1 << (fits.bit_length() - 1), 2048)

    def _sqlite_statement(self, size: int) -> tuple[str, tuple[int, ...]]:
        def literal(value: str | None) -> str:
            return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

        width = len(self.bound)
        picked = [f"column{i + 1}" for i in range(width)]
        picked += [literal(v) for v in self._fixed_values]
        group = "(" + ", ".join(["?"] * width) + ")"
        sql = (
            f"INSERT INTO {self.table.name} ({', '.join(self.columns)}) "
            f"SELECT {', '.join(picked)} FROM (VALUES {', '.join([group] * size)}) "
            f"WHERE column1 IS NOT 0"
        )
        # (The WHERE above also keeps SQLite from reading ON as a join's.)
        return sql + self._on_conflict(), (0,) * width

    def _on_conflict(self) -> str:
        """The ``ON CONFLICT ... DO UPDATE`` clause of an upsert ('' for an insert)."""
        if self.upsert is None:
            return ""
        key, rules = self.upsert
        name = self.table.name
        sets = []
        for column, rule in rules.items():
            if rule == "new":
                sets.append(f"{column} = excluded.{column}")
            elif rule == "old":
                sets.append(f"{column} = coalesce({name}.{column}, excluded.{column})")
            elif rule == "new_or_old":
                sets.append(f"{column} = coalesce(excluded.{column}, {name}.{column})")
            else:  # pragma: no cover - a typo in the rules
                raise ValueError(rule)
        return f" ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}"

    def _copy(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """On PostgreSQL (psycopg): the rows through ``COPY ... FROM STDIN``.

        ``executemany`` sends each row as a statement of its own, which cost the
        writer ~13 µs of its CPU per row (a loop iteration); a multi-row
        ``INSERT`` of a thousand rows cost more still (psycopg reads the long
        statement each time). ``COPY`` streams the rows: ~2 µs each. An upsert
        copies them to a temporary table first (each key once: a batch has one
        row per task run or flow run).
        """
        columns = ", ".join(self.columns)
        fixed = self._fixed_values
        with contextlib.closing(dbapi_cursor(conn)) as cursor:
            target = self.table.name
            if self.upsert is not None:
                # COPY cannot upsert: the rows go to a temporary table (emptied at
                # commit), then into the table in one INSERT ... ON CONFLICT.
                target = f"iterflow_copy_{self.table.name}"
                cursor.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {target} "
                    f"(LIKE {self.table.name}) ON COMMIT DELETE ROWS"
                )
            with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
                write = copy.write_row
                if fixed:
                    for row in rows:
                        write(row + fixed)
                else:
                    for row in rows:
                        write(row)
            if self.upsert is not None:
                cursor.execute(
                    f"INSERT INTO {self.table.name} ({columns}) SELECT {columns} FROM {target}"
                    f"{self._on_conflict()}"
                )
                cursor.execute(f"DELETE FROM {target}")  # the next statement's, this batch

    def run(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                self._copy(conn, rows)
                return
            if self._fixed_values:
                rows = [row + self._fixed_values for row in rows]
            super().run(conn, rows)
            return
        chain = itertools.chain.from_iterable
        step = self._chunk(conn)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            size = min(self._SMALLEST, step)
            while size < len(chunk):
                size *= 2
            entry = self._multi.get(size)
            if entry is None:
                entry = self._multi[size] = self._sqlite_statement(size)
            sql, padding = entry
            params = tuple(chain(chunk))
            if size > len(chunk):
                params += padding * (size - len(chunk))
            with contextlib.closing(dbapi_cursor(conn)) as cursor:
                cursor.execute(sql, params)


def _dialect_insert(dialect: str) -> Callable[[sa.Table], Any]:
    # The dialect's module is imported when first used: SQLAlchemy's PostgreSQL
    # dialect (with its asyncpg part) would cost every SQLite run's start ~40 ms.
    def insert(table: sa.Table) -> Any:
        return importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(table)

    return insert


NATIVE_UPSERT = {"sqlite": _dialect_insert("sqlite"), "postgresql": _dialect_insert("postgresql")}
_UPSERTS: dict[tuple[Any, ...], Any] = {}


def upsert_statement(table: sa.Table, dialect: str, key: str, rules: dict[str, str]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` following ``rules`` (SQLite, PostgreSQL)."""
    # Built once per shape: constructing the statement costs more than running it.
    cache_key = (table.name, dialect, key, tuple(rules.items()))
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        ins = NATIVE_UPSERT[dialect](table)
        new = ins.excluded
        stmt = _UPSERTS[cache_key] = ins.on_conflict_do_update(
            index_elements=[key], set_=_set_clause(table, rules, lambda c: new[c])
        )
    return stmt


def upsert(
    conn: sa.Connection, table: sa.Table, key: str, rows: list[dict[str, Any]],
    rules: dict[str, str],
) -> None:
    """Insert ``rows``, or update those whose ``key`` exists, following ``rules``."""
    if not rows:
        return
    name = conn.dialect.name
    if name in NATIVE_UPSERT:
        conn.execute(upsert_statement(table, name, key, rules), rows)
        return
    # Other databases: update, and insert when nothing was there.
    for row in rows:
        values = _set_clause(
            table, {c: r for c, r in rules.items() if c in row},
            lambda c, row=row: sa.literal(row[c], type_=table.c[c].type),
        )
        done = conn.execute(sa.update(table).where(table.c[key] == row[key]).values(values))
        if done.rowcount == 0:
            conn.execute(sa.insert(table).values(row))


def _set_clause(table: sa.Table, rules: dict[str, str], new: Any) -> dict[str, Any]:
    old = table.c
    clause: dict[str, Any] = {}
    for column, rule in rules.items():
        if rule == "new":
            clause[column] = new(column)
        elif rule == "old":
            clause[column] = sa.func.coalesce(old[column], new(column))
        elif rule == "new_or_old":
            clause[column] = sa.func.coalesce(new(column), old[column])
        else:  # pragma: no cover - a typo in the rules above
            raise ValueError(rule)
    return clause
