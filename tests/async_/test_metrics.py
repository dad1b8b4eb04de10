"""``iterflow.log_metric`` in async tasks: per iteration, in loop blocks, beside sync tasks."""

from __future__ import annotations

import asyncio

import pytest

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runtime import run_flow
from iterflow.store import metrics


@task
async def poll(n):
    i = iterflow.context.loop_index
    await asyncio.sleep(0)  # suspends between iterations: other tasks run meanwhile
    iterflow.log_metric("attempt", i)
    iterflow.context.log_metric("status", 200 if i == n - 1 else 202)
    if i < n - 1:
        raise LOOP(result=i)
    return i


@task
async def other(n):
    i = iterflow.context.loop_index
    await asyncio.sleep(0)
    iterflow.log_metric("other", -i)
    if i < n - 1:
        raise LOOP()
    return i


@task
def sync_side(n):
    i = iterflow.context.loop_index
    iterflow.log_metric("sync", i)
    if i < n - 1:
        raise LOOP()
    return i


@pytest.mark.parametrize("executor", [LocalExecutor, ThreadExecutor], ids=["local", "threads"])
def test_async_loops_record_their_metrics_per_task_in_order(executor, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("async metrics") as flow:
        poll(20)
        other(20)
        sync_side(20)
    state = run_flow(flow, executor=executor(), store=url)
    assert state.is_successful(), state
    polled = [(m.loop_index, m.name, m.value)
              for m in metrics(state.run_id, task="poll", store=url)]
    assert polled == [(i, name, float(v)) for i in range(20)
                      for name, v in (("attempt", i), ("status", 200 if i == 19 else 202))]
    assert [m.value for m in metrics(state.run_id, task="other", store=url)] == [
        float(-i) for i in range(20)]
    assert [m.loop_index for m in metrics(state.run_id, name="sync", store=url)] == list(
        range(20))
    assert all(m.block_index is None for m in metrics(state.run_id, store=url))


@task
async def async_body(total):
    await asyncio.sleep(0)
    iterflow.log_metric("total", total)
    return total + 1


@task
def until_three(total):
    return total >= 3


def test_async_metrics_inside_a_loop_block_carry_the_block_index(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("async block metrics") as flow, loop(initial=0) as it:
        nxt = async_body(it.result)
        poll(2)
        it.next(result=nxt, until=until_three(nxt))
    state = run_flow(flow, store=url)
    assert state.is_successful(), state
    totals = [(m.block_index, m.value) for m in metrics(state.run_id, name="total", store=url)]
    assert totals == [(0, 0.0), (1, 1.0), (2, 2.0)]
    attempts = [(m.block_index, m.loop_index)
                for m in metrics(state.run_id, name="attempt", store=url)]
    assert attempts == [(k, i) for k in range(3) for i in range(2)]
