"""The migration that adds the ``metrics`` table, on a real version-1 store with runs."""

from __future__ import annotations

import sqlalchemy as sa

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import metrics, open_store
from iterflow.store.migrations import MIGRATIONS, _add_metrics
from iterflow.store.runstore import RunStore

from .test_migration import FAILED, build_v1_store


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@task
def train():
    i = iterflow.context.loop_index
    iterflow.log_metric("loss", 1.0 / (1 + i))
    if i < 2:
        raise LOOP()
    return i


def test_metrics_arrive_on_a_store_with_runs(store_url):
    build_v1_store(store_url)
    # The store as it was just before this migration, whatever ran before it.
    mine = MIGRATIONS.index(_add_metrics)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()
    assert "metrics" not in _tables(store_url)
    with open_store(store_url) as store:
        assert {r.state for r in store.list_runs()} == {"Failed", "Success"}
        assert metrics(FAILED, store=store) == []  # older runs simply have none
    assert "metrics" in _tables(store_url)
    with Flow("after the upgrade") as flow:
        train()
    state = flow.run(store=store_url)
    assert state.is_successful()
    values = [m.value for m in metrics(state.run_id, store=store_url)]
    assert values == [1.0, 0.5, 1.0 / 3]


def test_the_migration_leaves_a_metrics_table_already_there_alone(sqlite_url):
    RunStore(sqlite_url).close()  # a new store: it has the table already
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO metrics (id, flow_run, name, value, time) "
                "VALUES (999, 1, 'kept', 1.5, 0)"
            ))
            _add_metrics(conn)
            assert conn.execute(sa.text("SELECT name FROM metrics")).scalar() == "kept"
    finally:
        engine.dispose()


def _metric_indexes(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {i["name"] for i in sa.inspect(engine).get_indexes("metrics")}
    finally:
        engine.dispose()


def test_the_dashboards_metric_indexes_arrive_on_a_store_with_metrics(store_url):
    from iterflow.store.migrations import _metrics_dashboard_indexes

    build_v1_store(store_url)
    mine = MIGRATIONS.index(_metrics_dashboard_indexes)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()
    assert "metrics" in _tables(store_url)
    assert not {"ix_metrics_task_run", "ix_metrics_block"} & _metric_indexes(store_url)
    with Flow("before the indexes") as flow:
        train()
    # A run recorded by the older schema: the dashboard reads it through the new indexes.
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO metrics (id, flow_run, task_run, loop_index, name, value, time) "
                "VALUES (999999, 1, 1, 0, 'kept', 1.5, 0)"
            ))
    finally:
        engine.dispose()
    with open_store(store_url) as store:
        state = flow.run(store=store)
        assert [m.value for m in metrics(state.run_id, store=store)] == [1.0, 0.5, 1.0 / 3]
    assert {"ix_metrics_task_run", "ix_metrics_block"} <= _metric_indexes(store_url)
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            _metrics_dashboard_indexes(conn)  # again: nothing changes
            assert conn.execute(sa.text(
                "SELECT value FROM metrics WHERE id = 999999")).scalar() == 1.5
    finally:
        engine.dispose()
