"""``iterflow.log_metric`` on every executor: recorded per iteration, in order.

Tasks are module-level so Dask workers import them by reference.
"""

from __future__ import annotations

import asyncio

import iterflow
from iterflow import Flow, loop, task
from iterflow.runtime import run_flow
from iterflow.signals import LOOP
from iterflow.store import metric_summary, metrics


@task
def train(epochs):
    i = iterflow.context.loop_index
    iterflow.log_metric("loss", 1.0 / (1 + i))
    iterflow.log_metric("step", i)
    iterflow.context.log_metric("lr", 0.1)
    if i < epochs:
        raise LOOP(result=i)
    return i


@task
def scaled(k):
    for i in range(5):
        iterflow.log_metric("seen", k * 100 + i)
    return k


@task
def climb(k):
    """A mapped loop: each child logs three metrics per iteration, 20 iterations."""
    i = iterflow.context.loop_index
    for name in ("a", "b", "c"):
        iterflow.log_metric(name, k * 1000 + i)
    if i < 19:
        raise LOOP(result=i)
    return k


@task
def block_step(n):
    iterflow.log_metric("total", n)
    return n + 1


@task
def block_inner(n):
    """A loop inside a loop block: metrics carry both indexes."""
    i = iterflow.context.loop_index
    iterflow.log_metric("inner", n * 10 + i)
    if i < 2:
        raise LOOP()
    return n


@task
def block_done(n):
    return n >= 3


@task
async def waiting(epochs):
    """An async looping task: it awaits between the metrics it logs."""
    i = iterflow.context.loop_index
    iterflow.log_metric("before", i)
    await asyncio.sleep(0.001)
    iterflow.context.log_metric("after", -i)
    if i < epochs:
        raise LOOP(result=i)
    return i


def _flow() -> Flow:
    with Flow("metrics on executors") as flow:
        train(epochs=4)
        scaled.map(k=[1, 2, 3])
    return flow


def test_metrics_recorded_in_order(executor, tmp_path, sink):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    flow = _flow()
    state = run_flow(flow, executor=executor, store=url, sinks=[sink])
    sink.assert_ok(state, flow)
    assert state.is_successful()
    run_id = state.run_id

    loss = metrics(run_id, task="train", name="loss", store=url)
    assert [m.loop_index for m in loss] == [0, 1, 2, 3, 4]
    assert [m.value for m in loss] == [1.0 / (1 + i) for i in range(5)]
    assert all(m.task_name == "train" and m.block_index is None for m in loss)
    times = [m.time for m in loss]
    assert times == sorted(times)

    # Three names per iteration, in the order logged.
    names = [(m.loop_index, m.name) for m in metrics(run_id, task="train", store=url)]
    assert names == [(i, n) for i in range(5) for n in ("loss", "step", "lr")]

    # Mapped children: each child's values in order, with its map index.
    seen = metrics(run_id, name="seen", store=url)
    by_child: dict[int | None, list[float]] = {}
    for m in seen:
        by_child.setdefault(m.map_index, []).append(m.value)
    assert by_child == {k - 1: [k * 100.0 + i for i in range(5)] for k in (1, 2, 3)}

    summary = {(s.task_name, s.name): s for s in metric_summary(run_id, store=url)}
    loss_summary = summary[("train", "loss")]
    assert (loss_summary.count, loss_summary.first, loss_summary.last) == (5, 1.0, 0.2)
    assert (loss_summary.min, loss_summary.max) == (0.2, 1.0)
    assert summary[("scaled", "seen")].count == 15

    # The same values reached the event sinks.
    events = [e for e in sink.metrics if e.name == "loss"]
    assert [e.loop_index for e in events] == [0, 1, 2, 3, 4]


def test_metrics_without_store_reach_sinks(executor, run, sink):
    state = run(_flow(), executor=executor)
    assert state.is_successful()
    steps = [(e.loop_index, e.value) for e in sink.metrics if e.name == "step"]
    assert steps == [(i, float(i)) for i in range(5)]
    assert all(e.task_name == "train" for e in sink.metrics if e.name == "lr")


def test_metrics_of_parallel_loops_arrive_in_logged_order_per_task_run(executor, tmp_path):
    # On threads and on Dask workers the three children loop at once; each
    # child's metrics still come back in the order that child logged them.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("parallel metrics") as flow:
        climb.map(k=[1, 2, 3])
    state = run_flow(flow, executor=executor, store=url)
    assert state.is_successful(), state
    found = metrics(state.run_id, task="climb", store=url)
    assert len(found) == 3 * 20 * 3
    by_child: dict[int | None, list[tuple[int | None, str, float]]] = {}
    for m in found:
        by_child.setdefault(m.map_index, []).append((m.loop_index, m.name, m.value))
    assert by_child == {
        k - 1: [(i, name, k * 1000.0 + i) for i in range(20) for name in "abc"]
        for k in (1, 2, 3)
    }


def test_metrics_inside_a_loop_block_on_every_executor(executor, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("block metrics on executors") as flow, loop(initial=0) as it:
        nxt = block_step(it.result)
        block_inner(it.index)
        it.next(result=nxt, until=block_done(nxt))
    state = run_flow(flow, executor=executor, store=url)
    assert state.is_successful(), state
    totals = metrics(state.run_id, name="total", store=url)
    assert [(m.block_index, m.loop_index, m.value) for m in totals] == [
        (k, 0, float(k)) for k in range(3)
    ]
    inner = metrics(state.run_id, task="block_inner", store=url)
    assert [(m.block_index, m.loop_index, m.value) for m in inner] == [
        (k, i, float(k * 10 + i)) for k in range(3) for i in range(3)
    ]


def test_metrics_of_an_async_task_on_every_executor(executor, tmp_path, sink):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("async metrics") as flow:
        waiting(epochs=5)
    state = run_flow(flow, executor=executor, store=url, sinks=[sink])
    sink.assert_ok(state, flow)
    assert state.is_successful(), state
    found = [(m.loop_index, m.name, m.value, m.task_name)
             for m in metrics(state.run_id, store=url)]
    assert found == [
        (i, name, value, "waiting")
        for i in range(6) for name, value in (("before", float(i)), ("after", float(-i)))
    ]
    assert [e.name for e in sink.metrics][:2] == ["before", "after"]
