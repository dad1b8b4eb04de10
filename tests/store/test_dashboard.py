"""The dashboard's readers (iterflow.store.dashboard) and the index they rely on."""

from __future__ import annotations

import sqlalchemy as sa

from iterflow.core.state import Looped, Retrying, Running
from iterflow.events import FlowRunEvent, TaskRunEvent
from iterflow.store import (
    LoopStats,
    iteration_page,
    iteration_summary,
    open_store,
    run_shape,
)
from iterflow.store.migrations import MIGRATIONS, _iteration_index
from iterflow.store.runstore import RunStore
from tests.ui.stores import write_big_run

INDEX = "ix_state_transitions_iteration"


def index_names(store: RunStore) -> set[str]:
    return {ix["name"] for ix in sa.inspect(store.engine).get_indexes("state_transitions")}


def test_the_migration_adds_the_iteration_index_to_a_store_with_data(tmp_path):
    url = f"sqlite:///{tmp_path}/iterflow.db"
    with open_store(url, home=tmp_path) as store:
        run = write_big_run(store, loops=300, block=5, width=5)
        key = next(g.key for g in run_shape(store, run.run_id).tasks if g.task_slug == "grind")
        before = iteration_page(store, key, start=290, limit=20)
        summary = iteration_summary(store, key)
    # Put the store back where it was before this migration, whichever
    # migrations come before it, and upgrade it with them plus this one.
    step = MIGRATIONS.index(_iteration_index)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {INDEX}")
        conn.exec_driver_sql(f"UPDATE schema_version SET version = {step + 1}")
    engine.dispose()
    with RunStore(url, home=tmp_path, migrations=MIGRATIONS[: step + 1]) as store:
        assert store.schema_version == step + 2
        assert INDEX in index_names(store)
        assert iteration_page(store, key, start=290, limit=20) == before
        assert iteration_summary(store, key) == summary
        plan = store.read(lambda conn: conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT loop_index, time, kind FROM state_transitions "
            "WHERE task_run = ? AND loop_index >= ? ORDER BY loop_index, time", (key, 100)
        ).all())
        assert any(INDEX in str(row) for row in plan), plan
        # Running it again changes nothing (an index only, IF NOT EXISTS).
        store.write(_iteration_index)


def test_loop_stats_read_incrementally_match_a_fresh_read(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        run_id, tid = "b" * 32, "b" * 32 + "/grind"
        sink = store.sink()
        sink.handle(FlowRunEvent(run_id, "f", Running(timestamp=100.0), tasks=(("grind", "g"),)))
        sink.handle(TaskRunEvent(run_id, tid, "grind", "g", None, 0, Running(timestamp=100.0)))
        stats = None
        t = 100.0
        for i in range(60):
            if i == 7:
                t += 1
                sink.handle(TaskRunEvent(run_id, tid, "grind", "g", None, i,
                                         Retrying("x", loop_index=i, timestamp=t)))
                sink.handle(TaskRunEvent(run_id, tid, "grind", "g", None, i,
                                         Running(loop_index=i, timestamp=t + 0.5)))
            t += 0.1 * (i % 5 + 1)
            sink.handle(TaskRunEvent(run_id, tid, "grind", "g", None, i,
                                     Looped(result=i, loop_index=i, timestamp=t)))
            if i % 20 == 19:
                sink.flush()
                key = run_shape(store, run_id).tasks[0].key
                stats = stats or LoopStats(key)
                stats.update(store)
        sink.close()
        fresh = iteration_summary(store, key)
        assert stats.summary() == fresh
        assert fresh.iterations == 60 and fresh.retries == 1 and fresh.first_failure == 7
        assert fresh.states == {"Looped": 60, "Retrying": 1}
        assert abs(fresh.max - 1.0) < 1e-9  # the failed attempt at 7 took 1 s
        assert fresh.slowest == 7
        assert len(fresh.strip) == 60
        narrow = stats.summary(width=7)
        assert len(narrow.strip) == 7 and sum(b.count for b in narrow.strip) == 61
        assert narrow.strip[0].failed == 1
