"""Async tasks on a real Dask LocalCluster: awaited on an event loop per worker thread,
made once and reused by every later job on that thread (never ``asyncio.run`` per call)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.aio_loops import run_on_thread_loop, thread_loop
from iterflow.errors import IterflowError
from iterflow.store import iterations, task_runs

distributed = pytest.importorskip("distributed")
from iterflow.executors import DaskExecutor  # noqa: E402  (needs distributed)


@pytest.fixture(scope="module")
def dask_cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@task
async def where(i):
    """Loops three times; returns where each iteration was awaited."""
    await asyncio.sleep(0.01)
    seen = [*iterflow.context.get("loop_result", []),
            (os.getpid(), threading.get_ident(), id(asyncio.get_running_loop()))]
    if iterflow.context.loop_index < 2:
        raise LOOP(result=seen)
    return seen


@task
def total(xs):
    return len(xs)


@pytest.mark.dask
def test_async_tasks_loop_on_dask_on_one_reused_loop_per_worker_thread(dask_cluster):
    with Flow("async on dask") as flow:
        w = where.map(list(range(8)))
        n = total(w)
    state = flow.run(executor=DaskExecutor(address=dask_cluster.scheduler_address))
    assert state.is_successful(), state
    assert state.result[n].result == 8
    assert [s.loop_count for s in state.result[w].map_states] == [3] * 8
    places = [p for child in state.result[w].result for p in child]
    assert {pid for pid, _, _ in places} <= {
        w.pid for w in dask_cluster.workers.values()
    }
    loops_per_thread: dict = {}
    for pid, thread, loop in places:
        loops_per_thread.setdefault((pid, thread), set()).add(loop)
    # 24 iterations of 8 task runs, and each worker thread used one loop for all of them.
    assert all(len(loops) == 1 for loops in loops_per_thread.values()), loops_per_thread
    recorded = task_runs(state.run_id)
    assert sum(1 for t in recorded if t.state == "Success" and t.map_index is not None) == 8
    history = iterations(state.run_id, "where", 0)
    assert [h.state for h in history] == ["Looped", "Looped", "Success"]


def test_a_thread_keeps_its_loop_across_calls_and_threads_do_not_share_one():
    async def loop_id():
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop())

    first, second = run_on_thread_loop(loop_id()), run_on_thread_loop(loop_id())
    assert first == second == id(thread_loop()) and not thread_loop().is_closed()
    other = []
    worker = threading.Thread(target=lambda: other.append(run_on_thread_loop(loop_id())))
    worker.start()
    worker.join()
    assert other[0] != first


def test_the_thread_loop_refuses_to_nest_in_a_running_loop():
    async def inner():
        return 1

    async def outer():
        coro = inner()
        with pytest.raises(IterflowError, match="inside a running event loop"):
            run_on_thread_loop(coro)

    asyncio.run(outer())
