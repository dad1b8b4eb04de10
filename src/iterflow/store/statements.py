"""The SQL the store's writer runs: built and compiled once, run with plain tuples.

Everything here exists for speed on the writer's hot path (see
:mod:`iterflow.store.writer`): each statement is a
:class:`~iterflow.store.prepared.Prepared` or a
:class:`~iterflow.store.prepared.FastInsert` (how they run is
:mod:`iterflow.store.prepared`'s job), rows are plain tuples in column order.
Also the ``task_runs`` upsert in its shapes, key lookups and the id counter.
The names of :mod:`iterflow.store.prepared` are re-exported here.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from iterflow.core.state import Kind
from iterflow.store.metric_packing import COLUMNS as METRIC_COLUMNS
from iterflow.store.prepared import (
    NATIVE_UPSERT,
    FastInsert,
    Prepared,
    dbapi_cursor,
    sqlite_variable_limit,
    upsert,
    upsert_statement,
)
from iterflow.store.schema import (
    counters,
    flow_runs,
    logs,
    metrics,
    results,
    state_transitions,
    task_runs,
)

__all__ = [
    "NATIVE_UPSERT",
    "TASK_RUN_COLUMNS",
    "TASK_RUN_RULES",
    "FastInsert",
    "Prepared",
    "allocate_ids",
    "dbapi_cursor",
    "find_keys",
    "insert_finished",
    "insert_finished_outside",
    "insert_flow_states",
    "insert_logs",
    "insert_looped",
    "insert_metrics",
    "insert_results",
    "insert_running",
    "insert_transitions",
    "last_looped",
    "run_owner",
    "upsert",
    "upsert_statement",
    "upsert_task_run_rows",
    "upsert_task_runs",
]


insert_results = FastInsert(
    results, ("id", "serializer", "data", "path", "size", "preview")
)
# Every state row; and the common one, a Looped state outside any loop block
# whose value is pickled into the row, with only what varies bound.
insert_transitions = FastInsert(
    state_transitions,
    ("id", "flow_run", "task_run", "kind", "loop_index", "block_index", "message",
     "traceback", "serializer", "data", "preview", "result_id", "time", "label"),
)
insert_looped = FastInsert(
    state_transitions,
    ("id", "flow_run", "task_run", "loop_index", "data", "preview", "time"),
    fixed={"kind": Kind.LOOPED.value, "serializer": "pickle", "block_index": None,
           "message": None, "traceback": None, "result_id": None},
)
# A task run that ended well, its value pickled into the row: no message.
insert_finished = FastInsert(
    state_transitions,
    ("id", "flow_run", "task_run", "kind", "loop_index", "block_index", "data", "preview",
     "time"),
    fixed={"serializer": "pickle", "message": None, "traceback": None, "result_id": None},
)
# ... outside any loop block (a chain's link, a map's child): no block index to bind.
insert_finished_outside = FastInsert(
    state_transitions,
    ("id", "flow_run", "task_run", "kind", "loop_index", "data", "preview", "time"),
    fixed={"serializer": "pickle", "block_index": None, "message": None, "traceback": None,
           "result_id": None},
)
# A task run's start (or restart): no message, no value.
insert_running = FastInsert(
    state_transitions,
    ("id", "flow_run", "task_run", "loop_index", "block_index", "time"),
    fixed={"kind": Kind.RUNNING.value, "message": None, "traceback": None,
           "serializer": None, "data": None, "preview": None, "result_id": None},
)
# A flow run's state: no task run, no value.
insert_flow_states = FastInsert(
    state_transitions,
    ("id", "flow_run", "kind", "message", "time"),
    fixed={"task_run": None, "loop_index": None, "block_index": None, "traceback": None,
           "serializer": None, "data": None, "preview": None, "result_id": None,
           "label": None},
)
insert_logs = FastInsert(
    logs, ("id", "flow_run", "task_run", "loop_index", "level", "message", "time")
)
# Metrics go in packed, a row per task run and batch (see metric_packing).
insert_metrics = FastInsert(metrics, METRIC_COLUMNS)

# How an upsert treats each column already in the row: "new" takes the new
# value, "old" keeps a value once set, "new_or_old" takes the new one unless
# it is NULL. Columns not listed are not touched by an update.
TASK_RUN_RULES = {
    "id": "old",
    "flow_run_id": "new",
    "task_slug": "new",
    "task_name": "new",
    "map_index": "new",
    "state": "new",
    "loop_index": "new",
    "message": "new",
    "ended": "new",
    "result_transition": "new",
    "started": "old",
    "loop_count": "new_or_old",
    "looped_index": "new_or_old",
    "looped_transition": "new_or_old",
    "identity": "new_or_old",
    "task_run_name": "new_or_old",
}


TASK_RUN_COLUMNS = tuple(task_runs.c.keys())

# Who drives a run (see iterflow.store.batch): read in every transaction that
# writes for it, with the row locked on PostgreSQL so a resume's claim waits.
run_owner = Prepared(
    lambda _dialect: sa.select(flow_runs.c.owner, flow_runs.c.pid, flow_runs.c.host)
    .where(flow_runs.c.run_id == sa.bindparam("run_id", type_=sa.String))
    .with_for_update(),
    ("run_id",),
)


upsert_task_runs = FastInsert(
    task_runs, TASK_RUN_COLUMNS, upsert=("task_run_id", TASK_RUN_RULES)
)


def _task_run_shape(null: tuple[str, ...]) -> tuple[FastInsert, Callable[..., tuple[Any, ...]]]:
    """The ``task_runs`` upsert of rows whose ``null`` columns are NULL, and what picks
    the rest from a full row (in :data:`TASK_RUN_COLUMNS` order).

    Same rules, same result as :data:`upsert_task_runs` for such rows; only the
    NULLs are written into the statement (see :class:`FastInsert`'s ``fixed``):
    on SQLite binding a value costs about what storing it does, and there is a
    ``task_runs`` row per task run in every batch — per map child, per task of a
    loop block's iteration, per link of a chain.
    """
    bound = tuple(c for c in TASK_RUN_COLUMNS if c not in null)
    pick = operator.itemgetter(*(TASK_RUN_COLUMNS.index(c) for c in bound))
    statement = FastInsert(task_runs, bound, fixed=dict.fromkeys(null),
                           upsert=("task_run_id", TASK_RUN_RULES))
    return statement, pick


# No message, no name: nearly every task run.
_QUIET = _task_run_shape(("message", "task_run_name"))
# ... and no Looped state either: a map's child, a block's body task, a chain's link.
_PLAIN = _task_run_shape(("message", "task_run_name", "looped_index", "looped_transition"))
# On SQLite, by which of the columns most often NULL are (no map index, no Looped state):
# a NULL costs sqlite3 ~13 times what an int does to bind (see FastInsert).
_SQLITE_SHAPES = {
    (no_map, no_loop): _task_run_shape(
        ("message", "task_run_name")
        + (("map_index",) if no_map else ())
        + (("looped_index", "looped_transition") if no_loop else ())
    )
    for no_map in (False, True) for no_loop in (False, True)
}
_LOOPED_INDEX, _MAP_INDEX, _MESSAGE, _NAME = (
    TASK_RUN_COLUMNS.index(c) for c in ("looped_index", "map_index", "message", "task_run_name")
)


def upsert_task_run_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Upsert ``task_runs`` rows (tuples in :data:`TASK_RUN_COLUMNS` order), natively.

    Rows with a message or a name go in the full statement. On SQLite the
    others go in a statement per shape above (whether the map index and the
    last Looped are NULL): most batches have one or two (a loop's task run
    and its block's body). On PostgreSQL, where ``COPY`` sends a NULL as
    cheaply as anything, in one statement, the narrowest that takes them all
    (each statement costs the writer a wait for the GIL, see :class:`FastInsert`).
    """
    if conn.dialect.name == "sqlite":
        _upsert_sqlite_shapes(conn, rows)
        return
    plain: list[tuple[Any, ...]] = []
    looped: list[tuple[Any, ...]] = []
    full: list[tuple[Any, ...]] = []
    for row in rows:
        if row[_MESSAGE] is not None or row[_NAME] is not None:
            full.append(row)
        elif row[_LOOPED_INDEX] is None:
            plain.append(row)
        else:
            looped.append(row)
    if looped:
        statement, pick = _QUIET
        statement.run(conn, list(map(pick, plain + looped)))
    else:
        statement, pick = _PLAIN
        statement.run(conn, list(map(pick, plain)))
    upsert_task_runs.run(conn, full)


def _upsert_sqlite_shapes(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """:func:`upsert_task_run_rows` on SQLite: a statement per shape of row."""
    shapes: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
    full: list[tuple[Any, ...]] = []
    for row in rows:
        if row[_MESSAGE] is not None or row[_NAME] is not None:
            full.append(row)
            continue
        key = (row[_MAP_INDEX] is None, row[_LOOPED_INDEX] is None)
        same = shapes.get(key)
        if same is None:
            same = shapes[key] = []
        same.append(row)
    for key, same in shapes.items():
        statement, pick = _SQLITE_SHAPES[key]
        statement.run(conn, list(map(pick, same)))
    upsert_task_runs.run(conn, full)


_TAKE_IDS = (
    sa.update(counters)
    .where(counters.c.name == sa.bindparam("counter", type_=sa.String))
    .values(value=counters.c.value + sa.bindparam("count", type_=sa.BigInteger))
)
_take_ids = Prepared(
    lambda _dialect: _TAKE_IDS.returning(counters.c.value), ("count", "counter")
)


def find_keys(
    conn: sa.Connection, table: sa.Table, name: str, wanted: dict[str, None]
) -> dict[str, int]:
    """The ``id`` of each row of ``table`` whose ``name`` column is in ``wanted``.

    On SQLite one statement per 1,024 names (fewer if the library allows fewer
    variables), of a few fixed sizes (padded with a name repeated),
    run on the DB-API cursor: a mapped task's
    children are new task runs, looked up in every batch.
    """
    found: dict[str, int] = {}
    names = list(wanted)
    sqlite = conn.dialect.name == "sqlite"
    step = min(1024, sqlite_variable_limit(conn)) if sqlite else 1000
    for start in range(0, len(names), step):
        chunk = names[start : start + step]
        if sqlite:
            size = min(8, step)
            while size < len(chunk):
                size *= 2
            size = min(size, step)
            marks = ", ".join(["?"] * size)
            with contextlib.closing(dbapi_cursor(conn)) as cursor:
                # Padded with the chunk's first name again: a name binds in a tenth
                # of the time a NULL does (see FastInsert), and matches only its row.
                cursor.execute(
                    f"SELECT {name}, id FROM {table.name} WHERE {name} IN ({marks})",
                    (*chunk, *[chunk[0]] * (size - len(chunk))),
                )
                rows = cursor.fetchall()
        else:
            column = table.c[name]
            rows = conn.execute(sa.select(column, table.c.id).where(column.in_(chunk))).all()
        found.update((row[0], row[1]) for row in rows)
    return found


def allocate_ids(conn: sa.Connection, count: int) -> int:
    """Reserve ``count`` ids for state rows, log lines and results; return the first.

    One statement per batch, under the transaction's write lock, so several
    processes never get the same ids, and ids grow in commit order.
    """
    if conn.dialect.update_returning:
        top = _take_ids.scalar(conn, (count, "ids"))
    else:
        conn.execute(_TAKE_IDS, {"count": count, "counter": "ids"})
        top = conn.execute(
            sa.select(counters.c.value).where(counters.c.name == "ids")
        ).scalar_one()
    return int(top) - count + 1


# Where a loop got to (a rescheduled Dask job asks, once per job, on its worker).
last_looped = Prepared(
    lambda _dialect: sa.select(task_runs.c.looped_index, task_runs.c.looped_transition).where(
        task_runs.c.task_run_id == sa.bindparam("task_run_id", type_=sa.String),
        task_runs.c.looped_index.is_not(None),
    ),
    ("task_run_id",),
)

