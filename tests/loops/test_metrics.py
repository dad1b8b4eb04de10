"""``iterflow.log_metric``: per iteration and per block iteration, checked values, no store."""

from __future__ import annotations

import math

import pytest

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.errors import IterflowError, MetricError
from iterflow.runtime import run_flow
from iterflow.store import metrics


@task
def step(total):
    iterflow.log_metric("total", total)
    return total + 1


@task
def finished(total):
    return total >= 3


@task
def inner_loop(n):
    i = iterflow.context.loop_index
    iterflow.log_metric("inner", n * 10 + i)
    if i < 1:
        raise LOOP()
    return n


def test_metrics_inside_a_loop_block_carry_the_block_index(tmp_path, sink):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("block metrics") as flow, loop(initial=0) as it:
        nxt = step(it.result)
        inner_loop(it.index)
        it.next(result=nxt, until=finished(nxt))
    state = run_flow(flow, store=url, sinks=[sink])
    assert state.is_successful(), state
    totals = metrics(state.run_id, name="total", store=url)
    assert [(m.block_index, m.loop_index, m.value) for m in totals] == [
        (0, 0, 0.0), (1, 0, 1.0), (2, 0, 2.0),
    ]
    inner = metrics(state.run_id, task="inner_loop", store=url)
    assert [(m.block_index, m.loop_index, m.value) for m in inner] == [
        (k, i, float(k * 10 + i)) for k in range(3) for i in range(2)
    ]
    assert [e.block_index for e in sink.metrics if e.name == "total"] == [0, 1, 2]


@task
def bad_metric(value):
    iterflow.log_metric("loss", value)
    return value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.5", None, True, [1], 10**400])
def test_a_bad_value_fails_the_task_naming_metric_and_task(run, value):
    with Flow("bad metrics") as flow:
        out = bad_metric(value)
    state = run(flow)
    failed = state.result[out]
    assert failed.is_failed()
    assert isinstance(failed.result, MetricError)
    assert isinstance(failed.result, (IterflowError, ValueError))
    assert "'loss'" in str(failed.result) and "'bad_metric'" in str(failed.result)


def test_log_metric_checks_values_outside_a_run_too():
    iterflow.log_metric("fine", 1)  # nowhere to record it: checked and dropped
    with pytest.raises(MetricError, match="'loss'"):
        iterflow.log_metric("loss", float("nan"))
    with pytest.raises(MetricError, match="non-empty string"):
        iterflow.context.log_metric("", 1.0)


@task
def numpy_like():
    import fractions

    iterflow.log_metric("ratio", fractions.Fraction(1, 4))  # any real number
    return 1


def test_without_a_store_metrics_reach_the_sinks_only(run, sink):
    with Flow("no store") as flow:
        numpy_like()
    assert run(flow).is_successful()
    [event] = sink.metrics
    assert (event.name, event.value, event.task_name, event.loop_index) == (
        "ratio", 0.25, "numpy_like", 0,
    )
    assert isinstance(event.value, float)


@task
def logs_one(k):
    iterflow.log_metric("k", k)
    return k


def test_deleting_a_run_deletes_its_metrics_and_no_others(tmp_path):
    from iterflow.store import delete_run

    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("two runs") as flow:
        logs_one(iterflow.Parameter("k"))
    first = run_flow(flow, store=url, parameters={"k": 1})
    second = run_flow(flow, store=url, parameters={"k": 2})
    delete_run(first.run_id, store=url)
    assert [m.value for m in metrics(second.run_id, store=url)] == [2.0]
    with pytest.raises(IterflowError):
        metrics(first.run_id, store=url)
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar() == 1
    finally:
        engine.dispose()


def test_a_store_that_is_the_only_sink_takes_metrics_as_plain_values(tmp_path):
    from iterflow.engine.tasklog import metric_recorder
    from iterflow.events import EventBus
    from iterflow.store import open_store

    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        sink = store.sink()
        try:
            # The bus hands out the store's own handle: the logger finds its recorder.
            assert metric_recorder(EventBus([sink]).emitter()) == sink.record_metric
            # Other sinks too, or a relay (threads, Dask, a loop block): events, as before.
            assert metric_recorder(EventBus([sink, object()]).emitter()) is None
            assert metric_recorder(lambda event: sink.handle(event)) is None
            assert metric_recorder(None) is None
        finally:
            sink.close()


@task
def counts_down(n):
    i = iterflow.context.loop_index
    iterflow.log_metric("left", n - i)
    iterflow.log_metric("half", (n - i) / 2)
    if i < n:
        raise LOOP()
    return i


def test_a_loops_metrics_recorded_by_the_store_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("store only") as flow:
        counts_down(3)
    state = run_flow(flow, store=url)  # the store is the only sink
    assert state.is_successful(), state
    found = metrics(state.run_id, store=url)
    assert [(m.loop_index, m.name, m.value) for m in found] == [
        (i, name, value) for i in range(4)
        for name, value in (("left", 3.0 - i), ("half", (3.0 - i) / 2))
    ]
    assert all(m.task_name == "counts_down" and m.block_index is None for m in found)
    times = [m.time for m in found]
    assert times == sorted(times) and times[0] > 1e9


@task
def good_then_bad(value):
    i = iterflow.context.loop_index
    if i < 2:  # the name is known, and goes through the store's fast lane, first
        iterflow.log_metric("loss", 1.5 if i == 0 else 7)
        raise LOOP()
    iterflow.log_metric("loss", value)
    return value


@pytest.mark.parametrize("value", [math.nan, math.inf, "0.5", None, True, 10**400])
def test_a_bad_value_of_a_known_metric_fails_the_task_and_keeps_what_came_before(
    tmp_path, value
):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("bad later") as flow:
        out = good_then_bad(value)
    state = run_flow(flow, store=url)  # the store is the only sink: its lane checks
    failed = state.result[out]
    assert failed.is_failed() and isinstance(failed.result, MetricError)
    assert "'loss'" in str(failed.result) and "'good_then_bad'" in str(failed.result)
    found = metrics(state.run_id, store=url)
    assert [(m.loop_index, m.value) for m in found] == [(0, 1.5), (1, 7.0)]
    assert all(type(m.value) is float for m in found)
