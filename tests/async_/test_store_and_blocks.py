"""Async tasks with the store (rules 10-12), inside loop blocks, and mixed with sync ones."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.errors import SerializationError
from iterflow.executors import ThreadExecutor
from iterflow.runtime import run_flow
from iterflow.store import iterations, load_result, task_runs


def test_every_looped_state_is_recorded_with_its_value_as_it_was(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"

    @task(checkpoint="every")
    async def grow():
        await asyncio.sleep(0)
        items = iterflow.context.get("loop_result", [])
        items.append(iterflow.context.loop_index)  # the same list, mutated each time
        if len(items) < 4:
            raise LOOP(result=items)
        return items

    with Flow("recorded") as flow:
        grow()
    state = flow.run(store=url)
    assert state.is_successful()
    history = iterations(state.run_id, "grow", store=url)
    assert [(h.state, h.loop_index) for h in history] == [
        ("Looped", 0), ("Looped", 1), ("Looped", 2), ("Success", 3)
    ]
    # Recorded as it was when LOOP was raised, not as the later iterations left it.
    assert [load_result(h.result_id, store=url) for h in history[:3]] == [[0], [0, 1],
                                                                          [0, 1, 2]]


def test_an_unserializable_loop_result_fails_the_async_task_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"

    @task(name="holds a lock")
    async def holds():
        await asyncio.sleep(0)
        i = iterflow.context.loop_index
        if i < 2:
            raise LOOP(result=threading.Lock() if i == 1 else i)
        return "done"

    with Flow("bad value") as flow:
        h = holds()
    failed = flow.run(store=url).result[h]
    assert failed.is_failed() and isinstance(failed.result, SerializationError)
    for part in ("'holds a lock'", "iteration 1", "_thread.lock"):
        assert part in failed.message
    (info,) = task_runs(failed_run_id(url), store=url)
    assert info.state == "Failed"


def failed_run_id(url: str) -> str:
    from iterflow.store import list_runs

    (run,) = list_runs(store=url)
    return run.run_id


def test_memory_does_not_grow_with_the_iterations_of_an_async_loop():
    @task
    async def accumulate(n):
        acc = iterflow.context.get("loop_result", 1000) + 1
        if iterflow.context.loop_index < n - 1:
            raise LOOP(result=acc)
        return acc - 1000

    def peak(n: int) -> int:
        with Flow("memory") as flow:
            a = accumulate(n)
        gc.collect()
        tracemalloc.start()
        try:
            state = run_flow(flow, store=None)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert state.result[a].result == n
        return top

    peak(1_000)
    growth = peak(60_000) - peak(6_000)
    assert growth < 500_000, f"peak grew by {growth} bytes from 6k to 60k iterations"


def test_async_tasks_inside_a_loop_block(sink, executor):
    @task
    async def fetch_page(cursor):
        await asyncio.sleep(0)
        return list(range(cursor, cursor + 3))

    @task
    def save(page, saved):  # a sync step between async ones
        return saved + sum(page)

    @task
    async def poll_until(n):  # loops on its own, inside each block iteration
        await asyncio.sleep(0)
        if iterflow.context.loop_index < n:
            raise LOOP()
        return iterflow.context.loop_index

    @task
    async def pack(page, total, polled):
        return {"cursor": page[-1] + 1, "saved": total, "polled": polled}

    @task
    def done(state):
        return state["cursor"] >= 9

    start = {"cursor": 0, "saved": 0, "polled": 0}
    with Flow("paged block") as flow, loop(initial=start, max_loops=10) as it:
        page = fetch_page(it.result["cursor"])
        total = save(page, it.result["saved"])
        state = pack(page, total, poll_until(2))
        it.next(result=state, until=done(state))
    final = run_flow(flow, store=None, executor=executor, sinks=[sink]).result[it.final]
    assert final.result == {"cursor": 9, "saved": sum(range(9)), "polled": 2}
    assert final.loop_count == 3


def test_sync_and_async_tasks_in_parallel_branches_on_threads(run):
    """A sync loop on the pool and an async loop on the event loop go on at the same time."""
    order = []

    @task
    def sync_loop():
        order.append(("sync", iterflow.context.loop_index))
        import time

        time.sleep(0.02)
        if iterflow.context.loop_index < 4:
            raise LOOP()
        return "sync"

    @task
    async def async_loop():
        order.append(("async", iterflow.context.loop_index))
        await asyncio.sleep(0.02)
        if iterflow.context.loop_index < 4:
            raise LOOP()
        return "async"

    with Flow("branches") as flow:
        s = sync_loop()
        a = async_loop()
    state = run(flow, executor=ThreadExecutor(max_workers=2))
    assert (state.result[s].result, state.result[a].result) == ("sync", "async")
    kinds = [kind for kind, _ in order]
    # Interleaved, not one loop after the other.
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)
