"""DESIGN §7.5: timeout applies to each iteration separately."""

from __future__ import annotations

import time

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP
from iterflow.states import TimedOut


def test_timeout_is_per_iteration_not_for_the_whole_loop(run, executor):
    @task(timeout=0.4)
    def steady():
        time.sleep(0.1)
        if iterflow.context.loop_index < 5:
            raise LOOP(result=iterflow.context.loop_index)
        return "done"

    with Flow("per iteration") as flow:
        s = steady()
    started = time.monotonic()
    state = run(flow, executor=executor).result[s]
    assert time.monotonic() - started > 0.5  # longer than one timeout in total
    assert state.is_successful() and state.loop_count == 6


def test_a_hung_iteration_times_out_at_its_own_index(run, release):
    @task(timeout=0.3, max_loops=20)
    def hangs_at_two():
        if iterflow.context.loop_index == 2:
            release.wait(30)
        raise LOOP(result=iterflow.context.loop_index)

    with Flow("hang") as flow:
        h = hangs_at_two()
    started = time.monotonic()
    state = run(flow).result[h]
    assert time.monotonic() - started < 5
    assert isinstance(state, TimedOut)
    assert state.loop_count == 3
    assert "iteration 2" in state.message and "timeout of 0.3 s" in state.message


def test_a_timed_out_iteration_is_retried_at_the_same_index_and_loop_result(run, release):
    seen = []

    @task(timeout=0.3, max_retries=1, max_loops=20)
    def slow_once():
        ctx = iterflow.context
        seen.append((ctx.loop_index, ctx.get("loop_result"), ctx.task_run_count))
        if ctx.loop_index == 1 and ctx.task_run_count == 1:
            release.wait(30)
        if ctx.loop_index < 2:
            raise LOOP(result=f"r{ctx.loop_index}")
        return ctx.loop_result

    with Flow("retry timeout") as flow:
        s = slow_once()
    state = run(flow).result[s]
    assert state.result == "r1"
    assert seen == [(0, None, 1), (1, "r0", 1), (1, "r0", 2), (2, "r1", 1)]
