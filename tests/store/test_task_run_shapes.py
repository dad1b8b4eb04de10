"""``task_runs`` rows go in by the narrowest upsert that takes them, as the full one would."""

from __future__ import annotations

import sqlalchemy as sa

from iterflow.store.schema import task_runs
from iterflow.store.statements import TASK_RUN_COLUMNS, upsert_task_run_rows, upsert_task_runs


def row(tid: str, key: int, **values) -> tuple:
    base = dict.fromkeys(TASK_RUN_COLUMNS)
    base.update(task_run_id=tid, id=key, flow_run_id="run", task_slug="t", task_name="t",
                state="Running", loop_index=0, started=1.0)
    base.update(values)
    return tuple(base[c] for c in TASK_RUN_COLUMNS)


def table(store) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(task_runs).order_by(task_runs.c.task_run_id))]


def write(store, rows, how) -> None:
    def transaction(conn):
        if how == "full":
            upsert_task_runs.run(conn, rows)
        else:
            upsert_task_run_rows(conn, rows)
    store.write(transaction)


def test_every_shape_ends_as_the_full_upsert_would(store):
    first = [
        row("run/plain", 1),
        row("run/loop", 2, looped_index=4, looped_transition=40, loop_count=5),
        row("run/noted", 3, message="waiting", task_run_name="named"),
        row("run/later", 4, looped_index=1, looped_transition=10, task_run_name="kept",
            identity="abc"),
        # A map's children: one plain, one a loop (SQLite has a shape for each).
        row("run/map[0]", 6, map_index=0),
        row("run/map[1]", 7, map_index=1, looped_index=2, looped_transition=20, loop_count=3),
    ]
    # Updates with NULLs where the rules keep the old values, and a new row.
    second = [
        row("run/plain", 1, state="Success", ended=2.0, loop_count=1, result_transition=7,
            started=1.5),
        row("run/loop", 2, state="Looped", loop_index=5),
        row("run/noted", 3, state="Failed", message="boom"),
        row("run/later", 4, state="Success", ended=3.0, result_transition=11),
        row("run/new", 5, state="Success", ended=2.0),
        row("run/map[0]", 6, map_index=0, state="Success", ended=2.0, result_transition=8),
        row("run/map[1]", 7, map_index=1, state="Looped", loop_index=3),
        row("run/map[2]", 8, map_index=2, state="Success", ended=2.0),
    ]
    write(store, first, "full")
    write(store, second, "full")
    expected = table(store)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(task_runs))
    # Every shape at once; then plain rows only, a looped one only, loud ones only.
    for batch in (first, [second[0], second[4]], [second[1]], second[2:4], second[5:]):
        write(store, batch, "shapes")
    assert table(store) == expected
    looped = TASK_RUN_COLUMNS.index("looped_index")
    names = TASK_RUN_COLUMNS.index("task_run_name")
    # (in task run id order: later, loop, map[0], map[1], map[2], new, noted, plain)
    assert [r[looped] for r in expected] == [1, 4, None, 2, None, None, None, None]
    assert [r[names] for r in expected] == ["kept", None, None, None, None, None, "named", None]
    mapped = TASK_RUN_COLUMNS.index("map_index")
    assert [r[mapped] for r in expected] == [None, None, 0, 1, 2, None, None, None]
