"""Reading a long iteration history a page at a time, in flat memory.

A task that looped 100,000 times has 100,000 recorded states;
:func:`iterflow.store.iterations` returns them all as one list, which is
fine for a script and wrong for a terminal. This module reads the same
records (:class:`~iterflow.store.queries.IterationRecord`, in the same
order) without ever holding more than one batch:

- :func:`iter_iterations` yields the records from ``offset`` on, at most
  ``limit`` of them, reading ``batch_size`` rows per query. Each batch is its
  own short read transaction that continues after the last state id seen
  (keyset paging), so a slow reader (``iterflow show ... | less``) never holds
  a snapshot of the database open, and a run still going shows the states
  recorded since the reading began.
- :func:`count_iterations` counts them without reading them.
- :func:`last_iterations` gives the last ``n``, oldest first.

``iterflow show RUN --iterations TASK`` is built on these: the first and
last iterations with a count between by default, a page with
``--limit/--offset``, and streamed JSON.

>>> from iterflow.store import iter_iterations                       # doctest: +SKIP
>>> for record in iter_iterations(run_id, "train", offset=1000, limit=10):
...     print(record.loop_index, record.preview)                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store.lookup import find_run
from iterflow.store.queries import find_task_run
from iterflow.store.records import IterationRecord
from iterflow.store.runstore import using_store
from iterflow.store.schema import results, state_transitions

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["count_iterations", "iter_iteration_dicts", "iter_iterations", "last_iterations"]

#: Rows read per query: large enough that a query's cost is spread thin, small
#: enough that memory stays flat whatever the history's length.
BATCH_SIZE = 2000


def _keys(conn: sa.Connection, run_id: str, task: str, map_index: int | None,
          name: str) -> tuple[sa.Select, list[int]]:
    """The task runs (``task_runs.id``) whose states make the history, oldest first.

    One, except for a task inside a loop block (one per block iteration).
    Returns them as a query (for ``IN``: there may be more than a database
    takes as parameters) and as a list. Raises
    :class:`~iterflow.errors.StoreError` for an unknown run or task.
    """
    run = find_run(conn, run_id, name)
    query = find_task_run(conn, run.run_id, task, map_index, name)
    return query, sorted(conn.execute(query).scalars())


def _select(*where: Any) -> sa.Select:
    """The columns of an :class:`IterationRecord`, from the states matching ``where``."""
    s = state_transitions
    return (
        sa.select(
            s.c.id, s.c.loop_index, s.c.kind, s.c.time, s.c.message, s.c.block_index,
            s.c.traceback, s.c.serializer, s.c.preview,
            sa.func.coalesce(sa.func.length(s.c.data), results.c.size).label("size"),
            s.c.label,
        )
        .select_from(s.outerjoin(results, results.c.id == s.c.result_id))
        # Running states are kept only where a task run (re)started; each Looped
        # already marks the start of the next iteration.
        .where(s.c.kind != "Running", *where)
    )


def _record(row: Any) -> IterationRecord:
    # Positional: a history can be a million rows, and a Row's attributes cost more.
    (state_id, loop_index, kind, when, message, block_index, tb, serializer, preview, size,
     label) = row
    stored = serializer is not None  # no serializer: the state carried None
    return IterationRecord(
        loop_index=loop_index,
        state=kind,
        time=when,
        message=message,
        preview=preview if stored else None,
        result_id=state_id if stored else None,
        size=size if stored else None,
        serializer=serializer,
        block_index=block_index,
        traceback=tb,
        label=label,
    )


def _as_dict(row: Any) -> dict[str, Any]:
    # What IterationRecord.as_dict() gives, without the frozen dataclass in between
    # (making one costs more than reading its row): for streaming to JSON.
    (state_id, loop_index, kind, when, message, block_index, tb, serializer, preview, size,
     label) = row
    stored = serializer is not None
    return {
        "loop_index": loop_index,
        "state": kind,
        "time": when,
        "message": message,
        "preview": preview if stored else None,
        "result_id": state_id if stored else None,
        "size": size if stored else None,
        "serializer": serializer,
        "block_index": block_index,
        "traceback": tb,
        "label": label,
    }


def iter_iterations(
    run_id: str,
    task: str,
    map_index: int | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
    store: RunStore | str | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[IterationRecord]:
    """The records :func:`iterflow.store.iterations` gives, one batch in memory at a time.

    Skips the first ``offset`` records and stops after ``limit`` (None: all).
    Errors (an unknown run or task) are raised by the first ``next()``.
    """
    return map(_record, _rows(run_id, task, map_index, offset, limit, store, batch_size))


def iter_iteration_dicts(
    run_id: str,
    task: str,
    map_index: int | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
    store: RunStore | str | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[dict[str, Any]]:
    """:func:`iter_iterations` as plain dicts (each record's ``as_dict()``), made faster."""
    return map(_as_dict, _rows(run_id, task, map_index, offset, limit, store, batch_size))


def _rows(
    run_id: str, task: str, map_index: int | None, offset: int, limit: int | None,
    store: RunStore | str | None, batch_size: int,
) -> Iterator[Any]:
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("offset and limit must not be negative")
    s = state_transitions
    with using_store(store) as st:
        _, keys = st.read(lambda conn: _keys(conn, run_id, task, map_index, st.name))
        skip, left = offset, limit
        # One task run at a time, so that every query is `task_run = ? AND id > ?`
        # in index order: with `task_run IN (...)` SQLite sorts all the rows left
        # for every batch.
        for key in keys:
            if skip:
                here = st.read(lambda conn, key=key: conn.execute(
                    sa.select(sa.func.count()).select_from(s).where(
                        s.c.task_run == key, s.c.kind != "Running")
                ).scalar())
                if here <= skip:
                    skip -= here
                    continue
            last_id: int | None = None
            while left is None or left > 0:
                size = batch_size if left is None else min(batch_size, left)
                stmt = _select(s.c.task_run == key)
                if last_id is not None:
                    stmt = stmt.where(s.c.id > last_id)
                stmt = stmt.order_by(s.c.id).limit(size).offset(skip or None)
                rows = st.read(lambda conn, stmt=stmt: conn.execute(stmt).all())
                skip = 0
                yield from rows
                if left is not None:
                    left -= len(rows)
                if len(rows) < size:
                    break
                last_id = rows[-1][0]
            if left is not None and left <= 0:
                return


def count_iterations(
    run_id: str, task: str, map_index: int | None = None, *,
    store: RunStore | str | None = None,
) -> int:
    """How many records :func:`iter_iterations` would yield (without reading them)."""
    with using_store(store) as st:

        def count(conn: sa.Connection) -> int:
            keys, _ = _keys(conn, run_id, task, map_index, st.name)
            s = state_transitions
            stmt = sa.select(sa.func.count()).select_from(s).where(
                s.c.task_run.in_(keys), s.c.kind != "Running"
            )
            return int(conn.execute(stmt).scalar())

        return st.read(count)


def last_iterations(
    run_id: str, task: str, n: int, map_index: int | None = None, *,
    store: RunStore | str | None = None,
) -> list[IterationRecord]:
    """The last ``n`` records, oldest first."""
    with using_store(store) as st:

        def tail(conn: sa.Connection) -> list[Any]:
            query, keys = _keys(conn, run_id, task, map_index, st.name)
            s = state_transitions
            # The last task run alone when it has n states (an index walk, no sort).
            for where in (s.c.task_run == keys[-1], s.c.task_run.in_(query)):
                rows = conn.execute(_select(where).order_by(s.c.id.desc()).limit(n)).all()
                if len(rows) >= n:
                    break
            return rows

        return [_record(row) for row in reversed(st.read(tail))]
