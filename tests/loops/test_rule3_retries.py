"""DESIGN §7.3: a retry resumes at iteration i with the same loop_result; the retry
budget is per iteration; a loop never restarts from 0 because of a retry."""

from __future__ import annotations

import itertools
import time

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP
from iterflow.states import Failed, Retrying

#: A loop limit far above what these tests need, so a broken engine fails fast.
GUARD = 50


def test_a_retry_resumes_the_failed_iteration_with_the_same_loop_result(run, sink, executor):
    calls = []

    @task(max_retries=1, max_loops=GUARD)
    def fails_at_two():
        ctx = iterflow.context
        calls.append((ctx.loop_index, ctx.get("loop_result"), ctx.task_run_count))
        if ctx.loop_index == 2 and ctx.task_run_count == 1:
            raise ConnectionError("transient")
        if ctx.loop_index < 4:
            raise LOOP(result=ctx.loop_index * 10)
        return ctx.loop_result

    with Flow("rule 3") as flow:
        t = fails_at_two()
    state = run(flow, executor=executor).result[t]
    assert calls == [(0, None, 1), (1, 0, 1), (2, 10, 1), (2, 10, 2), (3, 20, 1), (4, 30, 1)]
    assert (state.result, state.loop_count) == (30, 5)
    names = [(s.name, getattr(s, "loop_index", None)) for s in sink.task_states("fails_at_two")]
    assert names[4:8] == [("Running", 2), ("Retrying", 2), ("Running", 2), ("Looped", 2)]
    retrying = [s for s in sink.task_states("fails_at_two") if isinstance(s, Retrying)]
    assert "iteration 2" in retrying[0].message


def test_the_retry_budget_is_per_iteration(run):
    """Fails once at every iteration: max_retries=1 is enough because each success renews it."""
    attempts = []

    @task(max_retries=1, max_loops=GUARD)
    def fails_once_each_time():
        ctx = iterflow.context
        attempts.append(ctx.loop_index)
        if ctx.task_run_count == 1:
            raise OSError(f"first attempt of iteration {ctx.loop_index}")
        if ctx.loop_index < 5:
            raise LOOP(result=ctx.loop_index)
        return "completed"

    with Flow("budget") as flow:
        t = fails_once_each_time()
    state = run(flow).result[t]
    assert state.result == "completed" and state.loop_count == 6
    assert attempts == [i for i in range(6) for _ in range(2)]


def test_retries_exhausted_at_iteration_i_fail_there_without_restarting(run):
    seen = []

    @task(max_retries=2, max_loops=GUARD)
    def stuck_at_three():
        ctx = iterflow.context
        seen.append(ctx.loop_index)
        if ctx.loop_index == 3:
            raise ValueError("always")
        raise LOOP(result=ctx.loop_index)

    with Flow("exhausted") as flow:
        t = stuck_at_three()
    state = run(flow).result[t]
    assert isinstance(state, Failed)
    assert state.loop_count == 4
    assert seen == [0, 1, 2, 3, 3, 3]
    assert "iteration 3" in state.message and "ValueError: always" in state.message


def test_retry_delay_applies_between_attempts_of_an_iteration(run):
    times = []

    @task(max_retries=1, retry_delay=0.15, max_loops=GUARD)
    def delayed():
        times.append(time.monotonic())
        if iterflow.context.loop_index == 1 and iterflow.context.task_run_count == 1:
            raise OSError
        if iterflow.context.loop_index < 2:
            raise LOOP()

    with Flow("delay") as flow:
        delayed()
    run(flow)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] >= 0.14  # the retry of iteration 1
    assert gaps[1] == max(gaps)  # LOOP itself does not wait


def test_loop_result_survives_a_retry_even_if_the_failed_attempt_mutated_nothing(run):
    results = []

    @task(max_retries=3, max_loops=GUARD)
    def grows():
        ctx = iterflow.context
        acc = ctx.get("loop_result", ())
        results.append(acc)
        if ctx.task_run_count < 3:
            raise OSError
        if ctx.loop_index < 2:
            raise LOOP(result=(*acc, ctx.loop_index))
        return acc

    with Flow("acc") as flow:
        g = grows()
    assert run(flow).result[g].result == (0, 1)
    assert results == [(), (), (), (0,), (0,), (0,), (0, 1), (0, 1), (0, 1)]


def test_a_retry_starts_from_the_loop_result_as_handed_over_not_as_the_attempt_left_it(
    run, executor
):
    # A page appended in place to the carried list, then a failure: the retry must not
    # see the page twice (issue 12, item 4).
    @task(max_retries=2, max_loops=GUARD)
    def fetch():
        ctx = iterflow.context
        pages = ctx.get("loop_result", [])
        pages.append(f"page {ctx.loop_index}")
        if ctx.loop_index == 1 and ctx.task_run_count < 3:
            raise ConnectionError("transient")
        if ctx.loop_index < 2:
            raise LOOP(result=pages)
        return pages

    with Flow("mutating retry") as flow:
        t = fetch()
    assert run(flow, executor=executor).result[t].result == ["page 0", "page 1", "page 2"]

