"""The migration that adds ``task_runs.task_run_name`` and ``state_transitions.label``,
on a real version-1 store with runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import iterations, open_store
from iterflow.store.migrations import MIGRATIONS, _add_names_and_labels
from iterflow.store.runstore import RunStore

from .test_migration import FAILED, build_v1_store


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


@task(task_run_name="walk from {start}")
def walk(start):
    i = iterflow.context.loop_index
    iterflow.set_iteration_label(f"page {start + i}")
    if i < 2:
        raise LOOP()
    return i


def test_names_and_labels_arrive_on_a_store_with_runs(store_url):
    build_v1_store(store_url)
    # The store as it was just before this migration, whatever ran before it.
    mine = MIGRATIONS.index(_add_names_and_labels)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()
    assert "task_run_name" not in _columns(store_url, "task_runs")
    assert "label" not in _columns(store_url, "state_transitions")
    with open_store(store_url) as store:
        # Older runs read as runs without names or labels.
        assert {t.task_run_name for t in store.task_runs(FAILED)} == {None}
        assert all(r.label is None for t in store.task_runs(FAILED)
                   for r in store.iterations(FAILED, t.task_slug, t.map_index))
    assert "task_run_name" in _columns(store_url, "task_runs")
    assert "label" in _columns(store_url, "state_transitions")
    with Flow("after the upgrade") as flow:
        walk(5)
    state = flow.run(store=store_url)
    assert state.is_successful()
    with open_store(store_url) as store:
        assert [t.task_run_name for t in store.task_runs(state.run_id)] == ["walk from 5"]
    labels = [r.label for r in iterations(state.run_id, "walk", store=store_url)]
    assert labels == ["page 5", "page 6", "page 7"]


def test_the_migration_leaves_columns_already_there_alone(sqlite_url):
    RunStore(sqlite_url).close()  # a new store: it has the columns already
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            _add_names_and_labels(conn)
            _add_names_and_labels(conn)
    finally:
        engine.dispose()
    assert "label" in _columns(sqlite_url, "state_transitions")
