"""DESIGN §7.8: FAIL, SKIP, SUCCESS end a loop with that state; RETRY retries the
current iteration with the same loop_result; LOOP() with no result passes None."""

from __future__ import annotations

import iterflow
from iterflow import Flow, task
from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS
from iterflow.states import Failed, Skipped, Success


def ends_at(signal, at=2, **options):
    calls = []

    def fn():
        calls.append(iterflow.context.loop_index)
        if iterflow.context.loop_index == at:
            raise signal
        raise LOOP(result=iterflow.context.loop_index)

    return task(fn, name="ender", **options), calls


def test_success_ends_the_loop_and_carries_its_result(run, executor):
    t, calls = ends_at(SUCCESS("enough", result="payload"))
    with Flow("success") as flow:
        made = t()
    state = run(flow, executor=executor).result[made]
    assert type(state) is Success
    assert (state.result, state.message, state.loop_count) == ("payload", "enough", 3)
    assert calls == [0, 1, 2]


def test_fail_ends_the_loop_as_failed_without_retrying(run):
    t, calls = ends_at(FAIL("gave up"), max_retries=3)
    with Flow("fail") as flow:
        made = t()
    state = run(flow).result[made]
    assert type(state) is Failed
    assert (state.message, state.loop_count) == ("gave up", 3)
    assert calls == [0, 1, 2]


def test_skip_ends_the_loop_as_skipped_and_skips_downstream(run):
    t, calls = ends_at(SKIP("nothing to do"))
    with Flow("skip") as flow:
        made = t()
        after = task(lambda x: x, name="after")(made)
    state = run(flow)
    assert type(state.result[made]) is Skipped
    assert state.result[made].loop_count == 3
    assert state.result[after].is_skipped()
    assert calls == [0, 1, 2]


def test_retry_retries_the_current_iteration_with_the_same_loop_result(run, sink, executor):
    seen = []

    @task(max_loops=20)  # no max_retries: RETRY asks for a retry itself
    def asks_retry():
        ctx = iterflow.context
        seen.append((ctx.loop_index, ctx.get("loop_result"), ctx.task_run_count))
        if ctx.loop_index == 2 and ctx.task_run_count < 3:
            raise RETRY("not ready yet")
        if ctx.loop_index < 3:
            raise LOOP(result=f"r{ctx.loop_index}")
        return ctx.loop_result

    with Flow("retry") as flow:
        r = asks_retry()
    state = run(flow, executor=executor).result[r]
    assert seen == [(0, None, 1), (1, "r0", 1), (2, "r1", 1), (2, "r1", 2), (2, "r1", 3),
                    (3, "r2", 1)]
    assert state.result == "r2" and state.loop_count == 4
    retrying = [s for s in sink.task_states("asks_retry") if s.is_retrying()]
    assert [s.loop_index for s in retrying] == [2, 2]
    assert "not ready yet" in retrying[0].message


def test_loop_with_no_result_passes_none(run):
    seen = []

    @task
    def bare():
        seen.append(("loop_result" in iterflow.context, iterflow.context.get("loop_result", "x")))
        if iterflow.context.loop_index < 2:
            raise LOOP()

    with Flow("bare loop") as flow:
        bare()
    run(flow)
    assert seen == [(False, "x"), (True, None), (True, None)]


def test_loop_with_a_message_keeps_it_on_the_looped_state(run, sink):
    @task
    def talkative():
        if iterflow.context.loop_index < 1:
            raise LOOP("page 1 of 2", result=1)

    with Flow("message") as flow:
        talkative()
    run(flow)
    (looped,) = [s for s in sink.task_states("talkative") if s.is_looped()]
    assert looped.message == "page 1 of 2" and looped.result == 1
