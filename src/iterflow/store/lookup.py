"""Finding rows: a run by its id or a prefix of it, recorded values by their ids.

What the readers, resume points and retention share. Loading a value
unpickles it: only :func:`load_results` and :func:`load_state_results` do,
and only for the callers that asked for values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store.results import load_stored
from iterflow.store.schema import flow_runs, results, state_transitions

__all__ = ["find_run", "load_results", "load_state_results"]

_IN_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


def find_run(
    conn: sa.Connection,
    run_id: str,
    name: str,
    *,
    error: type[StoreError] = StoreError,
    for_update: bool = False,
) -> Any:
    """The ``flow_runs`` row for a run id or a unique prefix of one."""
    if not run_id:
        raise error("No run id given. `iterflow runs` lists the recorded runs.")
    query = sa.select(flow_runs)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query.where(flow_runs.c.run_id == run_id)).first()
    if row is not None:
        return row
    rows = conn.execute(
        query.where(flow_runs.c.run_id.startswith(run_id, autoescape=True))
        .order_by(flow_runs.c.run_id)
        .limit(6)
    ).all()
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise error(
            f"No run {run_id!r} in the run store {name}. `iterflow runs` lists the recorded runs."
        )
    shown = ", ".join(r.run_id for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise error(
        f"The run id prefix {run_id!r} matches more than one run in {name} ({shown}); "
        f"give more characters."
    )


def load_results(conn: sa.Connection, ids: Sequence[int]) -> dict[int, Any]:
    """Load (unpickle) the ``results`` rows with these ids (files, run parameters)."""
    values: dict[int, Any] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        rows = conn.execute(
            sa.select(
                results.c.id, results.c.serializer, results.c.data, results.c.path,
                results.c.preview,
            ).where(results.c.id.in_(chunk))
        )
        for row in rows:
            values[row.id] = load_stored(row.serializer, row.data, row.path, row.preview)
    missing = set(unique) - values.keys()
    if missing:
        raise StoreError(f"The store has lost the results {sorted(missing)[:5]}: it is damaged.")
    return values


def load_state_results(conn: sa.Connection, ids: Sequence[int]) -> dict[int, Any]:
    """Load (unpickle) the values carried by the state rows with these ids.

    A state that carried no value (``LOOP()`` without a result, a task that
    returned ``None``) gives ``None``.
    """
    values: dict[int, Any] = {}
    outside: dict[int, int] = {}  # state row id -> results row id
    unique = sorted(set(ids))
    s = state_transitions
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        rows = conn.execute(
            sa.select(s.c.id, s.c.serializer, s.c.data, s.c.preview, s.c.result_id)
            .where(s.c.id.in_(chunk))
        )
        for row in rows:
            if row.serializer is None:
                values[row.id] = None
            elif row.result_id is not None:
                outside[row.id] = row.result_id
            else:
                values[row.id] = load_stored(row.serializer, row.data, None, row.preview or "")
    if outside:
        loaded = load_results(conn, list(outside.values()))
        for row_id, result_id in outside.items():
            values[row_id] = loaded[result_id]
    missing = set(unique) - values.keys() - outside.keys()
    if missing:
        raise StoreError(
            f"The store has lost the recorded states {sorted(missing)[:5]}: it is damaged."
        )
    return values
