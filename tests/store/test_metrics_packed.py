"""Metrics stored packed: a row per task run and batch, read back value for value."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.errors import StoreError
from iterflow.store import metrics, open_store
from iterflow.store.dashboard import run_shape
from iterflow.store.dashboard_metrics import MetricHistory, metric_cells, metric_series
from iterflow.store.metric_packing import chunk_row, values
from iterflow.store.migrations import MIGRATIONS, _metrics_packed
from iterflow.store.runstore import RunStore

from .test_migration import SUCCEEDED, build_v1_store

_index = st.one_of(st.none(), st.integers(min_value=0, max_value=2**31 - 1))
_value = st.tuples(
    _index, _index, st.text(min_size=1, max_size=12),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(min_value=0, max_value=2e9),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_value, min_size=1, max_size=60), st.integers(min_value=1, max_value=2**40))
def test_a_chunk_gives_back_every_value_as_logged(logged, first_id):
    seq = list(range(first_id, first_id + 3 * len(logged), 3))
    loops, blocks, names, numbers, times = (list(column) for column in zip(*logged))
    row = chunk_row(7, None, seq, loops, blocks, names, numbers, times)
    columns = dict(zip(("id", "flow_run", "task_run", "count", "loop_lo", "loop_hi",
                        "block_lo", "block_hi", "names", "data"), row))
    assert columns["id"] == first_id and columns["count"] == len(logged)
    given_loops = [i for i in loops if i is not None]
    assert (columns["loop_lo"], columns["loop_hi"]) == (
        (min(given_loops), max(given_loops)) if given_loops else (None, None))
    given_blocks = [i for i in blocks if i is not None]
    assert (columns["block_lo"], columns["block_hi"]) == (
        (min(given_blocks), max(given_blocks)) if given_blocks else (None, None))
    back = list(values(SimpleNamespace(**columns)))
    assert back == [(s, *v) for s, v in zip(seq, logged)]


def test_a_damaged_chunk_is_a_clear_error():
    row = chunk_row(1, 2, [1, 2], [0, 1], [None, None], ["a", "a"], [1.0, 2.0], [0.0, 0.0])
    damaged = SimpleNamespace(count=2, names=row[8], data=row[9][:-3])
    with pytest.raises(StoreError, match=r"metrics row .* damaged"):
        list(values(damaged))


@task
def train():
    i = iterflow.context.loop_index
    iterflow.log_metric("loss", 1.0 / (1 + i))
    iterflow.log_metric("acc", i / 10)
    iterflow.log_metric("loss", 2.0 / (1 + i))  # twice in one iteration: both kept
    if i < 9:
        raise LOOP()
    return i


@task
def child(k):
    iterflow.log_metric("size", float(k))
    return k


@task
def rewarded(k):
    iterflow.log_metric("reward", k * 10.0)
    return k + 1


@task
def enough(k):
    return k >= 3


def _flow() -> Flow:
    with Flow("packed") as flow:
        train()
        child.map([1, 2, 3])
        with loop(initial=0) as it:
            nxt = rewarded(it.result)
            it.next(result=nxt, until=enough(nxt))
    return flow


def _everything(store, run_id):
    """What every reader of metrics sees of a run: records, charts, table cells."""
    groups = run_shape(store, run_id).tasks
    looping = next(g for g in groups if g.task_name == "train")
    block = next(g for g in groups if g.is_block)
    history = MetricHistory(looping.key, looping.task_run_id)
    history.update(store)
    return (
        [(m.task_name, m.map_index, m.loop_index, m.block_index, m.name, m.value)
         for m in metrics(run_id, store=store)],
        metric_series(store, looping.key, looping.task_run_id, start=2, end=5),
        metric_cells(store, looping.key, looping.task_run_id, [0, 4, 9]),
        metric_series(store, block.key, block.task_run_id),
        history.series(),
    )


def test_what_readers_see_of_a_run(store_url):
    with open_store(store_url) as store:
        state = _flow().run(store=store)
        assert state.is_successful()
        records, window, cells, block, whole = _everything(store, state.run_id)
        assert records[:3] == [("train", None, 0, None, "loss", 1.0),
                               ("train", None, 0, None, "acc", 0.0),
                               ("train", None, 0, None, "loss", 2.0)]
        assert len(records) == 30 + 3 + 3
        assert sorted(r[5] for r in records if r[4] == "size") == [1.0, 2.0, 3.0]
        assert [r[3] for r in records if r[4] == "reward"] == [0, 1, 2]
        assert window == {"loss": ([2, 3, 4, 5], [2 / 3, 0.5, 0.4, 2 / 6]),
                          "acc": ([2, 3, 4, 5], [0.2, 0.3, 0.4, 0.5])}
        assert cells == {0: {"loss": 2.0, "acc": 0.0}, 4: {"loss": 0.4, "acc": 0.4},
                         9: {"loss": 0.2, "acc": 0.9}}
        assert block == {"reward": ([0, 1, 2], [0.0, 10.0, 20.0])}
        assert whole["loss"][1][-1] == 0.2 and len(whole["acc"][0]) == 10
        assert metrics(state.run_id, name="acc", store=store)[-1].value == 0.9
        assert [m.value for m in metrics(state.run_id, task="child", store=store)] == sorted(
            m.value for m in metrics(state.run_id, task="child", store=store))


def test_a_long_loop_takes_few_rows(sqlite_url):
    @task
    def many():
        i = iterflow.context.loop_index
        for name in ("a", "b", "c"):
            iterflow.log_metric(name, float(i))
        if i < 2999:
            raise LOOP()

    with Flow("many") as flow:
        many()
    state = flow.run(store=sqlite_url)
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            rows, count = conn.execute(sa.text("SELECT count(*), sum(count) FROM metrics")).one()
    finally:
        engine.dispose()
    assert count == 9000
    assert rows <= 20  # one per batch, not one per value
    got = metrics(state.run_id, name="b", store=sqlite_url)
    assert [m.loop_index for m in got] == list(range(3000))
    assert all(m.value == m.loop_index for m in got)


def test_rows_of_an_older_store_are_packed_in_order(store_url):
    build_v1_store(store_url)
    mine = MIGRATIONS.index(_metrics_packed)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()  # one row per value still
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            run_key = conn.execute(sa.text("SELECT id FROM flow_runs WHERE run_id = :r"),
                                   {"r": SUCCEEDED}).scalar()
            tasks = conn.execute(sa.text(
                "SELECT id, task_name, map_index FROM task_runs WHERE flow_run_id = :r "
                "ORDER BY id"), {"r": SUCCEEDED}).all()[:2]
            # Two task runs logging in turns, one inside a loop block, one value of no task
            # run; ids in the order logged, as the writer gave them.
            logged = []
            for i in range(5):
                logged.append((tasks[0], i, None, "loss", 1.0 / (1 + i)))
                logged.append((tasks[1], 0, i, "reward", i * 10.0))
            logged.append((None, None, None, "flow", 2.5))
            for n, (owner, loop_index, block_index, name, value) in enumerate(logged):
                conn.execute(sa.text(
                    "INSERT INTO metrics (id, flow_run, task_run, loop_index, block_index, "
                    "name, value, time) VALUES (:id, :run, :task, :loop, :block, :name, "
                    ":value, :time)"),
                    {"id": 1_000_000 + n, "run": run_key, "task": owner and owner.id,
                     "loop": loop_index, "block": block_index, "name": name, "value": value,
                     "time": 100.0 + n})
    finally:
        engine.dispose()
    with open_store(store_url) as store:
        got = metrics(SUCCEEDED, store=store)
        assert [(m.task_name, m.map_index, m.loop_index, m.block_index, m.name, m.value, m.time)
                for m in got] == [
            (owner and owner.task_name, owner and owner.map_index, loop_index, block_index,
             name, value, 100.0 + n)
            for n, (owner, loop_index, block_index, name, value) in enumerate(logged)]
        assert metric_series(store, tasks[0].id, "no-block") == {
            "loss": ([0, 1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25, 0.2])}
        # New values land beside the packed ones.
        state = _flow().run(store=store)
        assert len(_everything(store, state.run_id)[0]) == 36
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT count(*) FROM metrics WHERE id >= 1000000 AND id < 2000000")
            ).scalar() == 3  # a row per task run (and one for the run's own value)
    finally:
        engine.dispose()


def test_checkpoint_every_commits_an_iterations_metrics_before_the_next(sqlite_url):
    seen = []

    @task(checkpoint="every")
    def careful():
        i = iterflow.context.loop_index
        if i:  # what another reader sees now: the last iteration's metrics, committed
            run = iterflow.context.flow_run_id
            seen.append(sorted((m.loop_index, m.name) for m in metrics(run, store=sqlite_url)))
        iterflow.log_metric("x", float(i))
        iterflow.log_metric("y", float(i))
        if i < 3:
            raise LOOP(result=i)

    with Flow("careful") as flow:
        careful()
    assert flow.run(store=sqlite_url).is_successful()
    assert seen == [
        [(j, name) for j in range(i) for name in ("x", "y")] for i in range(1, 4)
    ]


def test_flush_covers_metrics_logged_before_it(tmp_path):
    from iterflow.core.state import Running
    from iterflow.events import FlowRunEvent, TaskRunEvent

    run_id = "e" * 32
    tid = f"{run_id}/fit"
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        sink = store.sink()
        sink.handle(FlowRunEvent(run_id, "fitting", Running(), tasks=(("fit", "fit"),)))
        sink.handle(TaskRunEvent(run_id, tid, "fit", "fit", None, 0, Running()))
        record = sink.metric_lane(run_id, tid, {"loop_index": 4}.get)
        for k in range(1200):  # more than a batch: the writer wakes on its own too
            record("k", float(k))
        sink.flush()
        assert [m.value for m in metrics(run_id, store=store)] == [float(k) for k in range(1200)]
        assert {m.loop_index for m in metrics(run_id, store=store)} == {4}
        sink.close()
