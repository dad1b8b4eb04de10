"""Metrics in the dashboard: a chart per metric (downsampled, zoomed), the table's columns.

Real runs on a real SQLite store, served by the real app (``TestClient``);
the browser side is in ``test_browser_metrics.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.store import open_store, run_shape
from iterflow.store.dashboard_metrics import _body, _own, metric_cells, metric_series
from iterflow.ui import create_app
from iterflow.ui.charts import MAX_POINTS, downsample


def reference(ys: list[float], limit: int) -> set[int]:
    """The indexes a min/max-per-bucket downsampling must keep, the obvious way."""
    n = len(ys)
    if n <= limit:
        return set(range(n))
    parts = limit // 2
    kept = set()
    for b in range(parts):
        chunk = list(range(b * n // parts, (b + 1) * n // parts))
        if chunk:
            kept.add(min(chunk, key=lambda i: (ys[i], i)))  # the first lowest
            kept.add(min(chunk, key=lambda i: (-ys[i], i)))  # the first highest
    return kept


@settings(max_examples=150, deadline=None)
@given(ys=st.lists(st.one_of(st.integers(-5, 5).map(float), st.floats(-1e12, 1e12)),
                   min_size=1, max_size=6_000),
       limit=st.integers(2, 2_500))
def test_downsampling_is_min_and_max_per_bucket_within_the_budget(ys, limit):
    xs = [3 * i + 7 for i in range(len(ys))]  # any increasing x
    dx, dy = downsample(xs, ys, limit)
    assert len(dx) <= limit
    kept = sorted(reference(ys, limit))
    assert dx == [xs[i] for i in kept]
    assert dy == [ys[i] for i in kept]


@task
def train(epochs):
    i = iterflow.context.loop_index
    iterflow.log_metric("loss", 1.0 / (i + 1) + (7.0 if i == 2_345 else 0.0))  # one spike
    iterflow.log_metric("accuracy", i / epochs)
    iterflow.log_metric("lr", 0.1 if i < 100 else 0.01)
    if i == 3:
        iterflow.log_metric("loss", -1.0)  # logged twice in one iteration: the last counts
    if i < epochs - 1:
        raise LOOP(result=i)
    return i


@task
def plain(n):
    i = iterflow.context.loop_index
    if i < n - 1:
        raise LOOP(result=i * 2)
    return i


@task
def body(k):
    iterflow.log_metric("reward", k * 10.0)
    return k + 1


@task
def finished(n):
    return n >= 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("metric-charts")
    with open_store(f"sqlite:///{home}/iterflow.db", home=home) as store:
        with Flow("trained") as flow:
            train(6_000)
            plain(30)
        trained = flow.run(store=store)
        with Flow("rewarded") as flow, loop(initial=0) as it:
            nxt = body(it.result)
            it.next(result=nxt, until=finished(nxt))
        rewarded = flow.run(store=store)
        assert trained.is_successful() and rewarded.is_successful()
        with TestClient(create_app(store)) as client:
            yield store, client, trained.run_id, rewarded.run_id


def test_one_series_per_metric_downsampled_keeping_the_spike(served):
    _store, client, run_id, _ = served
    whole = client.get(f"/runs/{run_id}/series/train").json()
    assert whole["source"] == "metrics"
    assert list(whole["series"]) == ["loss", "accuracy", "lr"]
    loss = whole["series"]["loss"]
    assert loss["count"] == 6_000 and len(loss["x"]) <= MAX_POINTS
    assert 2_345 in loss["x"] and max(loss["y"]) == 7.0 + 1 / 2_346
    assert min(loss["y"]) == -1.0  # iteration 3's last value
    assert whole["start"] == 0 and whole["end"] == 5_999


def test_zoom_asks_for_a_range_and_gets_every_iteration(served):
    _store, client, run_id, _ = served
    zoom = client.get(f"/runs/{run_id}/series/train?start=2300&end=2400").json()
    for series in zoom["series"].values():
        assert series["x"] == list(range(2_300, 2_401))
    assert zoom["series"]["loss"]["y"][45] == 7.0 + 1 / 2_346
    assert (zoom["start"], zoom["end"]) == (2_300, 2_400)
    empty = client.get(f"/runs/{run_id}/series/train?start=90000&end=91000").json()
    assert empty["source"] == "metrics" and empty["series"] == {}  # nothing logged there


def test_without_metrics_the_loop_result_is_charted_as_before(served):
    _store, client, run_id, _ = served
    data = client.get(f"/runs/{run_id}/series/plain").json()
    assert data["source"] == "result"
    assert data["series"]["result"]["y"][:3] == [0.0, 2.0, 4.0]


def test_the_iteration_table_has_a_column_per_metric(served):
    _store, client, run_id, _ = served
    page = client.get(f"/runs/{run_id}").text
    for name in ("loss", "accuracy", "lr"):
        assert f'<th class="num metric" data-metric="{name}">{name}</th>' in page
    assert '<td class="num metric" data-metric="loss">0.5</td>' in page  # iteration 1
    assert '<td class="num metric" data-metric="loss">-1</td>' in page  # iteration 3: the last
    later = client.get(f"/runs/{run_id}/iterations/train?start=5990").text
    assert '<td class="num metric" data-metric="lr">0.01</td>' in later
    assert '<td class="num metric" data-metric="accuracy">0.999833</td>' in later  # 5999/6000
    task_page = client.get(f"/runs/{run_id}/tasks/train").text
    assert 'data-metric="accuracy"' in task_page
    assert f'data-src="/runs/{run_id}/series/train"' in task_page
    assert 'data-metric' not in client.get(f"/runs/{run_id}/iterations/plain").text


def test_a_loop_blocks_metrics_are_charted_by_block_iteration(served):
    store, client, _, run_id = served
    block = next(g for g in run_shape(store, run_id).tasks if g.is_block)
    series = metric_series(store, block.key, block.task_run_id)
    assert series == {"reward": ([0, 1, 2, 3], [0.0, 10.0, 20.0, 30.0])}
    assert metric_cells(store, block.key, block.task_run_id, [1, 3]) == {
        1: {"reward": 10.0}, 3: {"reward": 30.0}}
    task = block.task_run_id[len(run_id) + 1:]
    data = client.get(f"/runs/{run_id}/series/{task}?start=1&end=2").json()
    assert data["source"] == "metrics"
    assert data["series"]["reward"]["x"] == [1, 2]
    assert '<td class="num metric" data-metric="reward">30</td>' in client.get(
        f"/runs/{run_id}").text


def test_the_reads_use_the_metric_indexes(served):
    store, _client, run_id, _ = served
    key = next(g.key for g in run_shape(store, run_id).tasks if g.task_name == "train")
    sql = _own(key, 10, 20).compile(dialect=store.engine.dialect)
    params = tuple(sql.params[k] for k in sql.positiontup or ())
    plan = store.read(lambda conn: conn.exec_driver_sql(
        "EXPLAIN QUERY PLAN " + str(sql), params).all())
    assert "ix_metrics_task_run" in " ".join(str(r) for r in plan)


def test_a_blocks_reads_use_the_block_index_which_holds_block_rows_only(served):
    store, _client, _, run_id = served
    block = next(g for g in run_shape(store, run_id).tasks if g.is_block)
    sql = _body(block.task_run_id, 1, 1, 2).compile(dialect=store.engine.dialect)
    params = tuple(sql.params[k] for k in sql.positiontup or ())
    plan = store.read(lambda conn: conn.exec_driver_sql(
        "EXPLAIN QUERY PLAN " + str(sql), params).all())
    assert "ix_metrics_block" in " ".join(str(r) for r in plan)
    definition = store.read(lambda conn: conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE name = 'ix_metrics_block'").scalar())
    assert definition.endswith("WHERE block_lo IS NOT NULL")  # the writer skips others


def test_the_history_reads_only_what_was_logged_since_and_keeps_the_last_value(tmp_path):
    from iterflow.core.state import Looped, Running
    from iterflow.events import FlowRunEvent, MetricEvent, TaskRunEvent
    from iterflow.store.dashboard_metrics import MetricHistory

    run_id = "f" * 32
    tid = f"{run_id}/fit"
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        sink = store.sink()
        sink.handle(FlowRunEvent(run_id, "fitting", Running(), tasks=(("fit", "fit"),)))
        sink.handle(TaskRunEvent(run_id, tid, "fit", "fit", None, 0, Running()))

        def log(i: int, value: float) -> None:
            sink.handle(MetricEvent(run_id, tid, "fit", "fit", None, i, None, "loss", value, 0.0))

        for i in range(5):
            log(i, float(i))
            sink.handle(TaskRunEvent(run_id, tid, "fit", "fit", None, i,
                                     Looped(result=i, loop_index=i)))
        sink.flush()
        key = next(g.key for g in run_shape(store, run_id).tasks)
        history = MetricHistory(key, tid)
        history.update(store)
        assert history.series() == {"loss": ([0, 1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0, 4.0])}
        seen = history.last_id
        log(4, 40.0)  # iteration 4 retried: its new value replaces the old
        log(5, 5.0)
        sink.flush()
        history.update(store)
        assert history.last_id > seen
        assert history.series() == {"loss": ([0, 1, 2, 3, 4, 5],
                                             [0.0, 1.0, 2.0, 3.0, 40.0, 5.0])}
        assert history.series(2, 4) == {"loss": ([2, 3, 4], [2.0, 3.0, 40.0])}
        assert history.series(50, 60) == {}
        assert history.series() == metric_series(store, key, tid)  # the same, read whole
        sink.close()
