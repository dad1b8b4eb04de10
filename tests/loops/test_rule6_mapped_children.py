"""DESIGN §7.6: each mapped child loops on its own, with a fixed map_index and its own
loop_index, and children run in parallel where the executor allows."""

from __future__ import annotations

import threading

import iterflow
from iterflow import Flow, task
from iterflow.executors import ThreadExecutor
from iterflow.signals import LOOP


@task
def count_to(n):
    ctx = iterflow.context
    trail = [*ctx.get("loop_result", []), (ctx.map_index, ctx.loop_index)]
    if ctx.loop_index < n:
        raise LOOP(result=trail)
    return trail


def test_children_loop_independently(run, sink, executor):
    with Flow("rule 6") as flow:
        m = count_to.map([2, 0, 3])
    state = run(flow, executor=executor).result[m]
    assert state.result == [
        [(0, 0), (0, 1), (0, 2)],
        [(1, 0)],
        [(2, 0), (2, 1), (2, 2), (2, 3)],
    ]
    assert [child.loop_count for child in state.map_states] == [3, 1, 4]
    for index, n in enumerate([2, 0, 3]):
        looped = [s.loop_index for s in sink.task_states("count_to", index) if s.is_looped()]
        assert looped == list(range(n))


def test_one_childs_long_loop_does_not_block_another_child_on_threads(run):
    quick_done = threading.Event()

    @task
    def child(kind):
        ctx = iterflow.context
        if kind == "quick":
            if ctx.loop_index < 3:
                raise LOOP()
            quick_done.set()
            return "quick finished"
        # The slow child keeps looping until the quick one has finished: serialised
        # children would make it give up after its iteration budget.
        if not quick_done.wait(timeout=0.01) and ctx.loop_index < 1000:
            raise LOOP()
        return f"slow saw quick finish: {quick_done.is_set()}"

    with Flow("parallel children") as flow:
        m = child.map(["slow", "quick"])
    state = run(flow, executor=ThreadExecutor(max_workers=2)).result[m]
    assert state.result == ["slow saw quick finish: True", "quick finished"]


def test_a_failed_child_does_not_stop_its_siblings_loops(run):
    @task
    def maybe(x):
        if x == 1 and iterflow.context.loop_index == 1:
            raise ValueError("child 1 breaks at iteration 1")
        if iterflow.context.loop_index < 2:
            raise LOOP()
        return x

    with Flow("siblings") as flow:
        m = maybe.map([0, 1, 2])
    children = run(flow).result[m].map_states
    assert [c.name for c in children] == ["Success", "Failed", "Success"]
    assert [c.loop_count for c in children] == [3, 2, 3]


def test_children_retry_on_their_own(run):
    attempts = {}

    @task(max_retries=1, max_loops=20)
    def flaky_child(x):
        ctx = iterflow.context
        key = (ctx.map_index, ctx.loop_index)
        attempts[key] = attempts.get(key, 0) + 1
        if x == "flaky" and ctx.task_run_count == 1:
            raise OSError
        if ctx.loop_index < 1:
            raise LOOP(result=x)
        return ctx.loop_result

    with Flow("child retries") as flow:
        m = flaky_child.map(["steady", "flaky"])
    assert run(flow).result[m].result == ["steady", "flaky"]
    assert attempts == {(0, 0): 1, (0, 1): 1, (1, 0): 2, (1, 1): 2}
