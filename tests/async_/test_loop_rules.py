"""DESIGN §7, rule by rule, for ``async def`` tasks (§11: every loop rule holds).

Each test awaits something real (``asyncio.sleep``) inside the task, so the
driver's iteration is a coroutine that suspends, not a call that happens to
be a coroutine. The ``run`` fixture checks the event invariants of every run;
``executor`` covers ``LocalExecutor`` and ``ThreadExecutor``.
"""

from __future__ import annotations

import asyncio
import time

import iterflow
from iterflow import FAIL, LOOP, RETRY, SKIP, SUCCESS, Flow, task
from iterflow.states import Retrying, Success, TimedOut

GUARD = 50


def test_rule1_loop_reruns_with_the_next_index_and_the_carried_result(run, executor):
    """The headline example of DESIGN §2, as an async task."""

    @task
    async def accumulate(x, iterations):
        await asyncio.sleep(0)
        result = x + iterflow.context.get("loop_result", 0)
        if iterflow.context.loop_index < iterations:
            raise LOOP(result=result)
        return result

    with Flow("looping accumulator") as flow:
        y = accumulate(x=1, iterations=5)
    state = run(flow, executor=executor)
    assert state.is_successful()
    assert state.result[y].result == 6 and state.result[y].loop_count == 6


def test_rule1_the_context_of_each_iteration(run):
    seen = []

    @task
    async def watch(k):
        ctx = iterflow.context
        await asyncio.sleep(0)
        seen.append((ctx.loop_index, ctx.get("loop_result", "absent"), ctx.task_loop_count, k))
        if ctx.loop_index < 2:
            raise LOOP(result=f"r{ctx.loop_index}")
        return "end"

    with Flow("context") as flow:
        watch(k=7)
    run(flow)
    assert seen == [(0, "absent", 1, 7), (1, "r0", 2, 7), (2, "r1", 3, 7)]


def test_rule2_returning_ends_the_loop(run):
    @task
    async def once():
        await asyncio.sleep(0)
        return "value"

    with Flow("once") as flow:
        o = once()
    state = run(flow).result[o]
    assert isinstance(state, Success) and state.result == "value" and state.loop_count == 1


def test_rule3_a_retry_resumes_the_failed_iteration_with_the_same_loop_result(
    run, sink, executor
):
    calls = []

    @task(max_retries=1, max_loops=GUARD, retry_delay=0.01)
    async def fails_at_two():
        ctx = iterflow.context
        await asyncio.sleep(0)
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


def test_rule3_the_retry_budget_is_per_iteration(run):
    attempts = []

    @task(max_retries=1, max_loops=GUARD)
    async def fails_once_each_time():
        ctx = iterflow.context
        await asyncio.sleep(0)
        attempts.append(ctx.loop_index)
        if ctx.task_run_count == 1:
            raise OSError(f"first attempt of iteration {ctx.loop_index}")
        if ctx.loop_index < 3:
            raise LOOP(result=ctx.loop_index)
        return "completed"

    with Flow("budget") as flow:
        t = fails_once_each_time()
    state = run(flow).result[t]
    assert state.result == "completed" and state.loop_count == 4
    assert attempts == [0, 0, 1, 1, 2, 2, 3, 3]


def test_rule3_without_retries_left_the_task_fails_with_the_traceback(run):
    @task
    async def broken():
        await asyncio.sleep(0)
        if iterflow.context.loop_index < 1:
            raise LOOP()
        raise KeyError("missing")

    with Flow("fails") as flow:
        b = broken()
    state = run(flow).result[b]
    assert state.is_failed() and state.loop_count == 2
    assert "KeyError" in state.message and "'broken'" in state.message
    assert "iteration 1" in state.message and "raise KeyError" in state.traceback


def test_rule4_max_loops_fails_naming_the_task_the_limit_and_the_index(run):
    @task(max_loops=10)
    async def forever():
        await asyncio.sleep(0)
        raise LOOP()

    with Flow("runaway") as flow:
        f = forever()
    state = run(flow).result[f]
    assert state.is_failed() and "max_loops=10" in state.message
    assert "loop_index 9" in state.message and "'forever'" in state.message


def test_rule5_timeout_applies_to_each_iteration_and_cancels_the_coroutine(run, executor):
    cancelled = []

    @task(timeout=0.3, max_loops=GUARD)
    async def slow_third_step():
        i = iterflow.context.loop_index
        try:
            await asyncio.sleep(5 if i == 2 else 0.1)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        if i < 3:
            raise LOOP()
        return "done"

    with Flow("timeouts") as flow:
        s = slow_third_step()
    started = time.monotonic()
    state = run(flow, executor=executor).result[s]
    assert time.monotonic() - started < 3
    assert isinstance(state, TimedOut) and state.loop_count == 3
    assert "timeout of 0.3 s" in state.message
    assert cancelled == [2]  # the hung await was cancelled, not left running


def test_rule5_a_timed_out_iteration_is_retried_like_any_failure(run, sink):
    @task(timeout=0.2, max_retries=1, max_loops=GUARD)
    async def hangs_once():
        ctx = iterflow.context
        if ctx.loop_index == 1 and ctx.task_run_count == 1:
            await asyncio.sleep(10)
        if ctx.loop_index < 2:
            raise LOOP(result=ctx.loop_index)
        return ctx.loop_result

    with Flow("timeout retried") as flow:
        h = hangs_once()
    state = run(flow).result[h]
    assert state.result == 1 and state.loop_count == 3
    retrying = [s for s in sink.task_states("hangs_once") if isinstance(s, Retrying)]
    assert [s.loop_index for s in retrying] == [1] and "timeout" in retrying[0].message


def test_rule5_a_timeout_error_raised_by_the_task_is_its_own_error(run):
    @task(timeout=5)
    async def raises_timeout():
        await asyncio.sleep(0)
        raise TimeoutError("the upstream API timed out")

    with Flow("own timeout") as flow:
        r = raises_timeout()
    state = run(flow).result[r]
    assert state.is_failed() and not isinstance(state, TimedOut)
    assert "the upstream API timed out" in state.message


def test_rule6_mapped_children_loop_on_their_own_and_at_once(run, executor):
    @task
    async def count_to(n):
        await asyncio.sleep(0.2)
        i = iterflow.context.loop_index
        if i < n:
            raise LOOP()
        return (iterflow.context.map_index, i)

    with Flow("children") as flow:
        c = count_to.map([2, 0, 5, 1, 2, 0, 3, 4])
    started = time.monotonic()
    state = run(flow, executor=executor)
    elapsed = time.monotonic() - started
    assert state.result[c].result == [(0, 2), (1, 0), (2, 5), (3, 1), (4, 2), (5, 0), (6, 3),
                                      (7, 4)]
    assert [s.loop_count for s in state.result[c].map_states] == [3, 1, 6, 2, 3, 1, 4, 5]
    # 25 iterations of 0.2 s one after another would take 5 s; side by side, the
    # longest child's 6 iterations take 1.2 s.
    assert elapsed < 3.5, elapsed


def test_rule7_downstream_sees_only_the_final_value(run):
    seen = []

    @task
    async def grow():
        await asyncio.sleep(0)
        size = iterflow.context.get("loop_result", 1)
        if size < 1000:
            raise LOOP(result=size * 10)
        return size

    @task
    def describe(size):  # a sync task downstream of an async one
        seen.append(size)
        return f"final size {size}"

    @task
    async def shout(text):
        await asyncio.sleep(0)
        return text.upper()

    with Flow("downstream") as flow:
        d = shout(describe(grow()))
    assert run(flow).result[d].result == "FINAL SIZE 1000"
    assert seen == [1000]


def test_rule8_signals_inside_a_loop(run):
    retried = []

    @task
    async def search():
        await asyncio.sleep(0)
        i = iterflow.context.loop_index
        if i == 0:
            raise LOOP()
        assert iterflow.context.loop_result is None or i > 1
        if i * i > 50:
            raise SUCCESS(message="found", result=i)
        raise LOOP(result=i)

    @task(max_loops=GUARD)
    async def retry_in_loop():
        ctx = iterflow.context
        await asyncio.sleep(0)
        retried.append((ctx.loop_index, ctx.get("loop_result"), ctx.task_run_count))
        if ctx.loop_index == 1 and ctx.task_run_count < 3:
            raise RETRY("not yet")  # needs no retry budget, never restarts the loop
        if ctx.loop_index < 2:
            raise LOOP(result=ctx.loop_index + 100)
        return "ok"

    @task
    async def skip_at_one():
        await asyncio.sleep(0)
        if iterflow.context.loop_index == 1:
            raise SKIP("nothing to do")
        raise LOOP()

    @task
    async def fail_at_two():
        await asyncio.sleep(0)
        if iterflow.context.loop_index == 2:
            raise FAIL("gave up")
        raise LOOP()

    with Flow("signals") as flow:
        s = search()
        r = retry_in_loop()
        k = skip_at_one()
        f = fail_at_two()
    state = run(flow)
    assert state.result[s].result == 8 and state.result[s].message == "found"
    assert state.result[r].result == "ok"
    assert retried == [(0, None, 1), (1, 100, 1), (1, 100, 2), (1, 100, 3), (2, 101, 1)]
    assert state.result[k].name == "Skipped" and state.result[k].loop_count == 2
    assert state.result[f].is_failed() and state.result[f].message == "gave up"
    assert state.result[f].loop_count == 3


def test_rule9_state_handlers_see_every_transition(run):
    seen = []

    def watch(task, old, new):
        seen.append(f"Looped({new.loop_index})" if new.is_looped() else new.name)
        return new

    @task(state_handlers=[watch])
    async def three_steps():
        await asyncio.sleep(0)
        if iterflow.context.loop_index < 2:
            raise LOOP()
        return "done"

    def stop_at_30(task, old, new):
        if new.is_looped() and new.result >= 30:
            return Success(result=new.result)
        return new

    @task(state_handlers=[stop_at_30])
    async def tens():
        await asyncio.sleep(0)
        raise LOOP(result=iterflow.context.get("loop_result", 0) + 10)

    with Flow("handlers") as flow:
        three_steps()
        t = tens()
    state = run(flow)
    assert seen == ["Running", "Looped(0)", "Running", "Looped(1)", "Running", "Success"]
    assert state.result[t].result == 30 and state.result[t].loop_count == 3


def test_rule10_caching_applies_to_the_final_value_only(run):
    calls = []

    @task(cache_for=60)
    async def costly(x):
        await asyncio.sleep(0)
        calls.append(iterflow.context.loop_index)
        if iterflow.context.loop_index < 2:
            raise LOOP(result=x)
        return x * 2

    with Flow("cached") as flow:
        c = costly(21)
    first = run(flow).result[c]
    second = run(flow).result[c]
    assert (first.result, second.result) == (42, 42)
    assert second.name == "Cached" and calls == [0, 1, 2]


def test_a_cancelled_error_from_inside_the_task_is_its_failure_not_a_cancel(run):
    @task
    async def awaits_a_cancelled_future():
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    with Flow("inner cancel") as flow:
        a = awaits_a_cancelled_future()
    state = run(flow).result[a]
    assert state.is_failed() and state.name == "Failed"
    assert "CancelledError" in state.message


def test_a_task_subclass_with_an_async_run(run):
    class Poll(iterflow.Task):
        async def run(self, limit):
            await asyncio.sleep(0)
            if iterflow.context.loop_index < limit:
                raise LOOP(result=iterflow.context.loop_index)
            return iterflow.context.loop_result

    with Flow("subclass") as flow:
        p = Poll(name="poll")(limit=3)
    assert Poll().is_async
    assert run(flow).result[p].result == 2


def test_log_stdout_of_async_tasks_printing_at_once_goes_to_each_task(sink):
    @task(log_stdout=True)
    async def chatty(name):
        for i in range(3):
            print(f"{name} line {i}")
            await asyncio.sleep(0.01)
        return name

    with Flow("printing") as flow:
        chatty.map(["a", "b", "c"])
    state = iterflow.runtime.run_flow(flow, store=None, sinks=[sink])
    assert state.is_successful()
    by_task: dict = {}
    for log in sink.logs:
        by_task.setdefault(log.task_run_id, []).append(log.message)
    assert sorted(by_task.values()) == [
        [f"{n} line {i}" for i in range(3)] for n in "abc"
    ]


def test_a_partial_or_a_callable_object_with_an_async_call_is_awaited(run):
    import functools

    async def scaled(x, factor):
        await asyncio.sleep(0)
        return x * factor

    class Poller:
        async def __call__(self, x):
            await asyncio.sleep(0)
            if iterflow.context.loop_index < 2:
                raise LOOP()
            return x

    with Flow("callables") as flow:
        p = task(functools.partial(scaled, factor=3), name="scaled")(x=2)
        c = task(Poller(), name="poller")(x=5)
    state = run(flow)
    assert (state.result[p].result, state.result[c].result) == (6, 5)
    assert state.result[c].loop_count == 3
