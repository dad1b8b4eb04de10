"""The writer's multi-row statements: padded places never become rows, nor match names."""

from __future__ import annotations

import sqlalchemy as sa

from iterflow.store.schema import flow_run_shapes, task_runs
from iterflow.store.statements import (
    TASK_RUN_COLUMNS,
    FastInsert,
    find_keys,
    upsert_task_runs,
)


def test_a_part_filled_statement_inserts_exactly_its_rows(store):
    # Three rows in a statement of eight places on SQLite; "0" and "" are text keys,
    # not the integer the padding is made of.
    insert = FastInsert(flow_run_shapes, ("run_id", "shape"))
    rows = [("0", "[]"), ("", "[1]"), ("run", "[2]")]
    store.write(lambda conn: insert.run(conn, rows))
    with store.engine.connect() as conn:
        got = dict(conn.execute(sa.select(flow_run_shapes.c.run_id, flow_run_shapes.c.shape)).all())
    assert got == {"0": [], "": [1], "run": [2]}


def test_find_keys_finds_only_the_names_asked_for(store):
    def row(tid: str, key: int) -> tuple:
        values = dict.fromkeys(TASK_RUN_COLUMNS)
        values.update(task_run_id=tid, id=key, flow_run_id="run", task_slug=tid,
                      task_name="t", state="Running")
        return tuple(values[c] for c in TASK_RUN_COLUMNS)

    store.write(lambda conn: upsert_task_runs.run(
        conn, [row(f"run/t{i}", i + 1) for i in range(12)]))
    with store.engine.connect() as conn:
        found = find_keys(conn, task_runs, "task_run_id",
                          dict.fromkeys(["run/t3", "run/t5", "run/missing"]))
    assert found == {"run/t3": 4, "run/t5": 6}
