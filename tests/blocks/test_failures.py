"""How loop blocks fail, retry, hit their limits and get cancelled."""

from __future__ import annotations

import time

import pytest

import iterflow
from iterflow import FAIL, Flow, loop, task, triggers
from iterflow.errors import SerializationError
from iterflow.executors import ThreadExecutor
from iterflow.runtime import run_flow
from tests.blocks.conftest import BlockSink
from tests.blocks.tasks import add, at_least, ident


@task
def fragile(x, bad_index, failing_attempts=99):
    """Raises at iteration ``bad_index`` of its block on its first ``failing_attempts`` attempts."""
    ctx = iterflow.context
    if ctx.block_index == bad_index and ctx.block_run_count <= failing_attempts:
        raise ValueError(f"broken at iteration {bad_index}")
    return x + 1


def test_a_failed_task_fails_the_iteration_and_the_block(run, executor):
    with Flow("fails") as flow:
        with loop(initial=0, name="train") as it:
            a = fragile(it.result, bad_index=2)
            b = add(a, 0)
            it.next(result=b, until=at_least(b, 10))
        after = ident(it.final)
    state = run(flow, executor=executor)
    assert state.is_failed()
    block = state.result[it.final]
    assert block.is_failed() and block.loop_count == 3
    assert block.message.startswith(
        "loop block 'train' in flow 'fails', iteration 2 failed: fragile is Failed ("
    )
    assert "ValueError: broken at iteration 2" in block.message
    assert "TriggerFailed" not in block.message   # the cause, not what followed from it
    assert state.result[a].is_failed()                     # as in the last iteration
    assert state.result[b].name == "TriggerFailed"
    assert state.result[after].name == "TriggerFailed"     # downstream, as usual


def test_a_task_retrying_on_its_own_does_not_fail_the_iteration(run, executor, sink):
    @task(max_retries=2)
    def flaky(x):
        if iterflow.context.task_run_count == 1:
            raise ConnectionError("transient")
        return x + 1

    with Flow("own retries") as flow, loop(initial=0) as it:
        a = flaky(it.result)
        it.next(result=a, until=at_least(a, 3))
    state = run(flow, executor=executor)
    assert state.result[it.final].result == 3
    assert "Retrying(0)" not in sink.states("loop")
    assert sink.states(a.slug).count("Retrying(0)") == 3


def test_a_failed_iteration_is_retried_from_its_start_with_the_same_carried_value(
    run, executor, sink
):
    @task
    def record(seen, i):
        ctx = iterflow.context
        return [*seen, (i, ctx.block_run_count)]

    with Flow("iteration retry") as flow, loop(initial=[], max_retries=2) as it:
        seen = record(it.result, it.index)
        checked = fragile(it.index, bad_index=1, failing_attempts=2)
        it.next(result=seen, until=at_least(checked, 3))
    state = run(flow, executor=executor)
    assert state.is_successful()
    # iteration 1 failed twice and succeeded on its third attempt, with the same carried value
    assert state.result[it.final].result == [(0, 1), (1, 3), (2, 1)]
    assert sink.states("loop") == [
        "Running", "Looped(0)",
        "Running", "Retrying(1)", "Running", "Retrying(1)", "Running", "Looped(1)",
        "Running", "Success",
    ]
    # each attempt's task runs are their own: the record task ran in all three attempts
    ids = [e.task_run_id for e in sink.finals(seen.slug)]
    run_id = state.run_id
    assert ids == [
        f"{run_id}/loop/0/{seen.slug}",
        f"{run_id}/loop/1/{seen.slug}",
        f"{run_id}/loop/1/attempt2/{seen.slug}",
        f"{run_id}/loop/1/attempt3/{seen.slug}",
        f"{run_id}/loop/2/{seen.slug}",
    ]


def test_an_iteration_out_of_retries_fails_the_block(run, executor, sink):
    with Flow("out of retries") as flow, loop(initial=0, max_retries=1) as it:
        a = fragile(it.result, bad_index=0)
        it.next(result=a, until=at_least(a, 3))
    state = run(flow, executor=executor)
    block = state.result[it.final]
    assert block.is_failed()
    assert "iteration 0 failed after 2 attempts: fragile is Failed" in block.message
    assert sink.states("loop") == ["Running", "Retrying(0)", "Running", "Failed"]


def test_the_retry_delay_does_not_hold_up_the_rest_of_the_flow(sink):
    @task
    def tick(x):
        time.sleep(0.05)
        return x + 1

    with Flow("pause") as flow:
        with loop(initial=0, max_retries=1, retry_delay=0.8) as it:
            a = fragile(it.result, bad_index=0, failing_attempts=1)
            it.next(result=a, until=at_least(a, 2))
        chain = tick(0)
        for _ in range(4):
            chain = tick(chain)
    started = time.monotonic()
    state = run_flow(flow, store=None, executor=ThreadExecutor(4), sinks=[sink])
    assert state.is_successful() and state.result[chain].result == 5
    assert time.monotonic() - started >= 0.8
    retried_at = next(e.state.timestamp for e in sink.task_events("loop") if e.state.is_retrying())
    chain_done = sink.finals(chain.slug)[0].state.timestamp
    resumed_at = [e.state.timestamp for e in sink.task_events("loop") if e.state.is_running()][1]
    assert resumed_at - retried_at >= 0.8
    assert chain_done < resumed_at   # the chain went on during the pause


def test_max_loops_ends_the_block_with_a_clear_failure(run, executor):
    with Flow("runaway") as flow, loop(initial=0, max_loops=3, name="forever") as it:
        a = add(it.result, 1)
        it.next(result=a, until=at_least(a, 100))
    state = run(flow, executor=executor)
    block = state.result[it.final]
    assert block.is_failed() and block.loop_count == 3
    assert "loop block 'forever'" in block.message
    assert "max_loops=3" in block.message and "loop_index 2" in block.message
    assert type(block.result).__name__ == "LoopLimitError"


def test_the_loop_timeout_is_a_budget_for_the_whole_loop(run, executor):
    @task
    def slow(x):
        time.sleep(0.05)
        return x + 1

    with Flow("budget") as flow, loop(initial=0, timeout=0.3, name="patient") as it:
        a = slow(it.result)
        it.next(result=a, until=at_least(a, 1000))
    state = run(flow, executor=executor)
    block = state.result[it.final]
    assert block.name == "TimedOut" and block.is_failed()
    assert "loop block 'patient'" in block.message and "timeout=0.3 s" in block.message
    assert 2 <= block.loop_count < 20


def test_a_failed_outside_input_fails_the_block_trigger(run, executor):
    @task
    def broken():
        raise FAIL("no data")

    with Flow("no input") as flow:
        data = broken()
        with loop(initial=0) as it:
            a = add(it.result, data)
            it.next(result=a, until=at_least(a, 3))
        after = ident(it.final)
    state = run(flow, executor=executor)
    assert state.result[it.final].name == "TriggerFailed"
    assert state.result[after].name == "TriggerFailed"
    assert state.result[a].name == "TriggerFailed"
    assert "ran no iteration" in state.result[a].message


def test_an_until_value_without_truth_fails_the_block(run, executor):
    @task
    def ambiguous(x):
        return Ambiguous()

    with Flow("no truth") as flow, loop(initial=0) as it:
        a = add(it.result, 1)
        it.next(result=a, until=ambiguous(a))
    block = run(flow, executor=executor).result[it.final]
    assert block.is_failed() and "could not be decided" in block.message
    assert "ambiguous" in block.message


class Ambiguous:
    def __bool__(self):
        raise ValueError("truth value is ambiguous")


def test_a_skipped_until_task_fails_the_iteration(run, executor):
    @task
    def skipper(x):
        raise iterflow.SKIP("not today")

    with Flow("skipped until") as flow, loop(initial=0) as it:
        a = add(it.result, 1)
        it.next(result=a, until=skipper(a))
    block = run(flow, executor=executor).result[it.final]
    assert block.is_failed() and "was skipped, so it has no value" in block.message


def test_a_failure_handled_inside_the_body_does_not_fail_the_iteration(run, executor):
    @task(trigger=triggers.all_finished)
    def cleanup(x):
        return "cleaned"

    with Flow("handled") as flow, loop(initial=0) as it:
        a = add(it.result, 1)
        doomed = fragile(a, bad_index=0)       # fails on iteration 0, not terminal
        cleanup(doomed)                         # terminal, runs whatever happened
        it.next(result=a, until=at_least(a, 2))
    state = run(flow, executor=executor)
    assert state.is_successful() and state.result[it.final].result == 2


def test_a_carried_value_that_cannot_be_recorded_fails_the_block():
    class Picky(BlockSink):
        def handle(self, event):
            state = getattr(event, "state", None)
            ours = getattr(event, "task_slug", None) == "loop"
            if ours and state is not None and state.is_looped():
                raise SerializationError("cannot serialize the carried value of type Widget")
            super().handle(event)

    with Flow("unrecordable") as flow, loop(initial=0) as it:
        a = add(it.result, 1)
        it.next(result=a, until=at_least(a, 5))
    sink = Picky()
    state = run_flow(flow, store=None, sinks=[sink])
    block = state.result[it.final]
    assert block.is_failed() and "Widget" in block.message and block.loop_count == 1
    assert sink.states("loop") == ["Running", "Failed"]


@pytest.mark.parametrize("name", ["local", "threads"])
def test_ctrl_c_inside_a_block_cancels_it(name):
    from tests.blocks.conftest import make_executor

    @task
    def interrupt(x):
        if iterflow.context.block_index == 2:
            raise KeyboardInterrupt
        return x + 1

    with Flow("interrupted") as flow, loop(initial=0) as it:
        a = interrupt(it.result)
        it.next(result=a, until=at_least(a, 10))
    sink = BlockSink()
    with pytest.raises(KeyboardInterrupt):
        run_flow(flow, store=None, executor=make_executor(name), sinks=[sink])
    assert sink.states("loop")[-1] == "Cancelled"
    assert sink.task_events("loop")[-1].state.loop_count == 3


def test_a_retried_iteration_starts_from_the_carried_value_as_handed_over(run, executor):
    # A body task changes the carried list in place, then the iteration fails: the
    # retry must start from the list as it was (issue 12, item 4).
    @task
    def append_in_place(pages, i):
        pages.append(i)
        return pages

    with Flow("mutating iteration retry") as flow, loop(initial=[], max_retries=2) as it:
        pages = append_in_place(it.result, it.index)
        checked = fragile(it.index, bad_index=1, failing_attempts=2)
        it.next(result=pages, until=at_least(checked, 3))
    state = run(flow, executor=executor)
    assert state.is_successful()
    assert state.result[it.final].result == [0, 1, 2]
