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
    build_v1_store(sqlite_url)
    mine = MIGRATIONS.index(_add_metrics)
    RunStore(sqlite_url, migrations=MIGRATIONS[:mine + 1]).close()  # it has the table now
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
    # A value recorded by the older schema, still there after the indexes arrive.
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO metrics (id, flow_run, task_run, loop_index, name, value, time) "
                "VALUES (999999, 1, 1, 0, 'kept', 1.5, 0)"
            ))
    finally:
        engine.dispose()
    RunStore(store_url, migrations=MIGRATIONS[:mine + 1]).close()
    assert {"ix_metrics_task_run", "ix_metrics_block"} <= _metric_indexes(store_url)
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            _metrics_dashboard_indexes(conn)  # again: nothing changes
            assert conn.execute(sa.text(
                "SELECT value FROM metrics WHERE id = 999999")).scalar() == 1.5
    finally:
        engine.dispose()
    with Flow("after the indexes") as flow:
        train()
    with open_store(store_url) as store:
        state = flow.run(store=store)
        assert [m.value for m in metrics(state.run_id, store=store)] == [1.0, 0.5, 1.0 / 3]
    assert {"ix_metrics_task_run", "ix_metrics_block"} <= _metric_indexes(store_url)


@task
def rewarded(k):
    iterflow.log_metric("reward", k * 10.0)
    return k + 1


@task
def enough(k):
    return k >= 3


def _block_index_sql(url: str) -> str:
    """How the store defines ``ix_metrics_block`` (SQLite's or PostgreSQL's text)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT sql FROM sqlite_master WHERE name = 'ix_metrics_block'"
            else:
                query = ("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_metrics_block' "
                         "AND schemaname = current_schema()")
            return str(conn.exec_driver_sql(query).scalar())
    finally:
        engine.dispose()


def test_the_block_index_keeps_only_block_rows_after_the_upgrade(store_url):
    from iterflow import loop
    from iterflow.store.dashboard import run_shape
    from iterflow.store.dashboard_metrics import metric_series
    from iterflow.store.migrations import _metrics_block_index_partial

    build_v1_store(store_url)
    mine = MIGRATIONS.index(_metrics_block_index_partial)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()
    assert "WHERE" not in _block_index_sql(store_url).upper()  # every row, as before
    RunStore(store_url, migrations=MIGRATIONS[:mine + 1]).close()
    assert "BLOCK_INDEX IS NOT NULL" in _block_index_sql(store_url).upper()
    _metrics_block_index_partial_again(store_url)
    assert "BLOCK_INDEX IS NOT NULL" in _block_index_sql(store_url).upper()
    # A loop block and a loop, read through the newest index.
    with Flow("block after") as flow, loop(initial=0) as it:
        nxt = rewarded(it.result)
        it.next(result=nxt, until=enough(nxt))
        train()
    with open_store(store_url) as store:
        run_id = flow.run(store=store).run_id
        block = next(g for g in run_shape(store, run_id).tasks if g.is_block)
        assert metric_series(store, block.key, block.task_run_id) == {
            "reward": ([0, 1, 2], [0.0, 10.0, 20.0]),
            "loss": ([0, 1, 2], [1.0 / 3] * 3),  # each block iteration's last
        }
        assert [m.value for m in metrics(run_id, task="train", store=store)] == [
            1.0, 0.5, 1.0 / 3] * 3
    assert "BLOCK_LO IS NOT NULL" in _block_index_sql(store_url).upper()


def _metrics_block_index_partial_again(url: str) -> None:
    """Run the migration once more on an upgraded store: it must change nothing."""
    from iterflow.store.migrations import _metrics_block_index_partial

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _metrics_block_index_partial(conn)
    finally:
        engine.dispose()


def test_a_new_store_has_the_partial_block_index(store_url):
    open_store(store_url).close()
    assert "BLOCK_LO IS NOT NULL" in _block_index_sql(store_url).upper()
