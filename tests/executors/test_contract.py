"""The executor contract: the same flows give the same results and states everywhere.

Every test runs on LocalExecutor, ThreadExecutor and DaskExecutor (on a shared
two-worker LocalCluster), through the suite's ``run`` fixture, whose event
sink checks on every run that each task run's events arrive in order: legal
moves only, ``Looped`` states counting 0, 1, 2, ..., exactly one final state,
and that final state the very one in the flow's result.

Tasks are module-level functions: on Dask they travel by reference and the
workers import this module. Handlers run on the worker too, so what they see
is read back from the events, never from a closure.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.core.state import Kind
from iterflow.events import LogEvent, TaskRunEvent
from iterflow.runtime import run_flow
from iterflow.signals import LOOP


# -- tasks ------------------------------------------------------------------------------
@task
def accumulate(x, iterations):
    result = x + iterflow.context.get("loop_result", 0)
    if iterflow.context.loop_index < iterations:
        raise LOOP(result=result)
    return result


@task
def count_up(n):
    done = iterflow.context.get("loop_result", 0)
    if done < n:
        raise LOOP(result=done + 1)
    return done * 10


@task(max_retries=2)
def flaky_sum(n):
    """Sums loop indexes; iteration 2 fails on its first two attempts."""
    ctx = iterflow.context
    total = ctx.get("loop_result", 0)
    if ctx.loop_index == 2 and ctx.task_run_count < 3:
        raise ValueError(f"flaky attempt {ctx.task_run_count}")
    total += ctx.loop_index
    if ctx.loop_index < n:
        raise LOOP(result=total)
    return total, ctx.loop_index, ctx.task_run_count


@task(max_loops=3)
def forever():
    raise LOOP(result=iterflow.context.loop_index)


@task
def boom():
    raise ValueError("boom")


@task
def passthrough(x):
    return x


def note_transition(task, old, new):
    """A state handler: writes what it saw into the state's message."""
    new.message = f"{old.name}->{new.name}"
    return new


@task(state_handlers=[note_transition])
def three_times():
    if iterflow.context.loop_index < 2:
        raise LOOP(result=iterflow.context.loop_index)
    return "done"


@task
def chatty(n):
    ctx = iterflow.context
    ctx.logger.info("iteration %d of %d", ctx.loop_index, n)
    if ctx.loop_index < n:
        raise LOOP(result=ctx.loop_index)
    return n


@task
def nap(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@task
def laps(n):
    time.sleep(0.05)
    if iterflow.context.loop_index < n:
        raise LOOP()
    return time.time()


def kinds(states):
    return [s.name for s in states]


# -- same results and states on every executor ------------------------------------------
def test_headline_accumulate_loop(run, executor, sink):
    with Flow("looping accumulator") as flow:
        y = accumulate(x=1, iterations=5)

    state = run(flow, executor=executor)

    assert state.is_successful()
    assert state.result[y].result == 6
    assert state.result[y].loop_count == 6
    looped = [s for s in sink.task_states(y.slug) if s.kind is Kind.LOOPED]
    assert [(s.loop_index, s.result) for s in looped] == [(i, i + 1) for i in range(5)]


def test_mapped_children_loop_different_numbers_of_times(run, executor, sink):
    with Flow("mapped loops") as flow:
        counts = count_up.map([0, 3, 1, 5])

    state = run(flow, executor=executor)

    assert state.is_successful()
    parent = state.result[counts]
    assert parent.is_mapped()
    assert parent.result == [0, 30, 10, 50]
    assert [child.loop_count for child in parent.map_states] == [1, 4, 2, 6]
    for index, n in enumerate([0, 3, 1, 5]):
        looped = [s for s in sink.task_states(counts.slug, index) if s.kind is Kind.LOOPED]
        assert [s.loop_index for s in looped] == list(range(n))


def test_retry_resumes_the_same_iteration(run, executor, sink):
    with Flow("retries") as flow:
        total = flaky_sum(4)

    state = run(flow, executor=executor)

    final = state.result[total]
    assert final.is_successful()
    # 0+1+2+3+4, with iteration 2 on its third attempt and the loop never restarted
    assert final.result == (10, 4, 1)
    assert final.loop_count == 5
    states = sink.task_states(total.slug)
    assert kinds(states) == [
        "Running", "Looped", "Running", "Looped",
        "Running", "Retrying", "Running", "Retrying", "Running", "Looped",
        "Running", "Looped", "Running", "Success",
    ]
    retrying = [s for s in states if s.kind is Kind.RETRYING]
    assert [(s.loop_index, s.run_count) for s in retrying] == [(2, 1), (2, 2)]
    assert "flaky attempt 1" in retrying[0].message


def test_max_loops_fails_the_task_naming_the_limit(run, executor):
    with Flow("too many loops") as flow:
        f = forever()

    state = run(flow, executor=executor)

    assert state.is_failed()
    final = state.result[f]
    assert final.is_failed()
    assert final.loop_count == 3
    assert "'forever'" in final.message
    assert "max_loops=3" in final.message
    assert "loop_index 2" in final.message


def test_failing_task_and_its_downstream_trigger_failed(run, executor):
    with Flow("failure") as flow:
        b = boom()
        after = passthrough(b)

    state = run(flow, executor=executor)

    assert state.is_failed()
    assert state.result[b].kind is Kind.FAILED
    assert "ValueError: boom" in state.result[b].message
    assert "boom" in state.result[b].traceback
    assert isinstance(state.result[b].result, ValueError)
    assert state.result[after].kind is Kind.TRIGGER_FAILED


def test_state_handler_sees_every_transition(run, executor, sink):
    with Flow("handled") as flow:
        t = three_times()

    state = run(flow, executor=executor)

    assert state.result[t].result == "done"
    seen = [(s.name, s.message, getattr(s, "loop_index", None)) for s in sink.task_states(t.slug)]
    assert seen == [
        ("Running", "Pending->Running", 0),
        ("Looped", "Running->Looped", 0),
        ("Running", "Looped->Running", 1),
        ("Looped", "Running->Looped", 1),
        ("Running", "Looped->Running", 2),
        ("Success", "Running->Success", None),
    ]


def test_events_arrive_in_order_per_task_run(run, executor, sink):
    """Logs and states of many concurrent looping children, each run in its own order."""
    sizes = [6, 2, 9, 0, 4, 7, 3, 5]
    with Flow("ordered events") as flow:
        c = chatty.map(sizes)

    state = run(flow, executor=executor)

    assert state.result[c].result == sizes
    for index, n in enumerate(sizes):
        task_run_id = f"{state.run_id}/{c.slug}/{index}"
        mine = [
            e for e in sink.events
            if isinstance(e, (TaskRunEvent, LogEvent)) and e.task_run_id == task_run_id
        ]
        trail = [
            f"log{e.loop_index}" if isinstance(e, LogEvent) else f"{e.state.name}{e.loop_index}"
            for e in mine
        ]
        expected = []
        for i in range(n + 1):
            expected += [f"Running{i}", f"log{i}", f"Looped{i}" if i < n else f"Success{i}"]
        assert trail == expected


# -- parallelism ----------------------------------------------------------------------------
def test_independent_tasks_run_at_the_same_time(run, parallel_executor):
    with Flow("two naps") as flow:
        a = nap(0.5)
        b = nap(0.5)

    state = run(flow, executor=parallel_executor)

    (start_a, end_a), (start_b, end_b) = state.result[a].result, state.result[b].result
    assert max(start_a, start_b) < min(end_a, end_b), "the two tasks did not overlap"


def test_a_long_loop_does_not_hold_up_other_children(run, parallel_executor):
    """The short children finish while the long one still loops.

    On Dask a short child may first be queued behind the loop on the same
    worker; work stealing moves it to the idle worker within about a second,
    which is why the loop lasts a few seconds.
    """
    with Flow("one long loop") as flow:
        ends = laps.map([60, 0, 0, 0])

    state = run(flow, executor=parallel_executor)

    long_end, *short_ends = state.result[ends].result
    assert all(end < long_end for end in short_ends)
    assert state.result[ends].map_states[0].loop_count == 61


def test_one_executor_runs_one_flow_after_another(run, executor):
    """``start()`` sets up each run afresh: nothing leaks from one run into the next."""
    with Flow("twice") as flow:
        y = accumulate(x=2, iterations=2)
    assert run(flow, executor=executor).result[y].result == 6
    assert run(flow, executor=executor).result[y].result == 6


# -- the submit seam: fn(*args, **shared) ---------------------------------------------------
def echo(a, b, *, context, inputs, cancel=None):
    """A job: returns what it was given, and whether its cancel flag is set."""
    return a, b, context, inputs, None if cancel is None else cancel.is_set()


def run_jobs(executor, jobs):
    """Submit ``(args, shared)`` pairs inside ``start()``; return their values in order."""
    with executor.start():
        futures = [executor.submit(echo, *args, key=f"run/echo/{i}", shared=shared)
                   for i, (args, shared) in enumerate(jobs)]
        pending = set(futures)
        while pending:
            _, pending = executor.wait(pending)
        return [executor.result(future) for future in futures]


def test_a_job_gets_its_args_and_the_shared_values_as_keywords(executor):
    big = list(range(50_000))  # big enough for Dask to send it to the workers once
    context = {"flow_name": "f", "parameters": {"big": big}, "deep": [big]}
    flag = threading.Event()
    jobs = [((i, "x"), {"context": context, "inputs": {"n": i, "table": big}, "cancel": flag})
            for i in range(3)]

    results = run_jobs(executor, jobs)

    for i, (a, b, got_context, inputs, cancelled) in enumerate(results):
        assert (a, b) == (i, "x")
        assert got_context == context
        assert inputs == {"n": i, "table": big}
        assert cancelled is False  # a flag that works where the job ran, not yet set
    assert context == {"flow_name": "f", "parameters": {"big": big}, "deep": [big]}


def test_a_job_without_shared_values_gets_only_its_args(executor):
    def shout(word):
        return word.upper()

    with executor.start():
        future = executor.submit(shout, "hi", key="run/shout")
        pending = {future}
        while pending:
            _, pending = executor.wait(pending)
        assert executor.result(future) == "HI"


def test_start_may_be_entered_again_while_started(executor):
    with executor.start() as outer, executor.start() as inner:
        assert inner is outer
        future = executor.submit(echo, 1, 2, key="run/echo", shared={"context": {}, "inputs": {}})
        pending = {future}
        while pending:
            _, pending = executor.wait(pending)
        assert executor.result(future)[:2] == (1, 2)
    # and it still runs a flow afterwards, on its own
    with Flow("after nesting") as flow:
        y = accumulate(x=1, iterations=1)
    assert run_flow(flow, executor=executor, store=None).result[y].result == 2
# -- cancelling ------------------------------------------------------------------------------
@task(max_loops=10_000)
def tick(i):
    time.sleep(0.02)
    raise LOOP(result=iterflow.context.loop_index)


class LoopWatcher:
    """A sink that signals once ``count`` task runs have each recorded a Looped state."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.looped: set[str] = set()
        self.ready = threading.Event()

    def handle(self, event) -> None:
        if isinstance(event, TaskRunEvent) and event.state.kind is Kind.LOOPED:
            self.looped.add(event.task_run_id)
            if len(self.looped) >= self.count:
                self.ready.set()


def test_ctrl_c_of_a_mapped_loop_records_its_children_cancelled(executor, tmp_path):
    """Every child recorded ends Cancelled, at the iteration it reached: none stays Looped."""
    from iterflow.store import task_runs

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    with Flow("interrupted map") as flow:
        tick.map(list(range(4)))
    watcher = LoopWatcher(1 if isinstance(executor, iterflow.executors.LocalExecutor) else 2)

    def interrupt() -> None:
        if watcher.ready.wait(60):
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_flow(flow, executor=executor, store=store, sinks=[watcher], run_id="interrupted")

    children = [info for info in task_runs("interrupted", store=store)
                if info.map_index is not None]
    assert children
    assert {info.state for info in children} == {"Cancelled"}, [
        (info.map_index, info.state, info.loop_count) for info in children
    ]
    stopped = [info for info in children if info.task_run_id in watcher.looped]
    assert stopped and all(info.loop_count >= 2 for info in stopped), [
        (info.map_index, info.loop_count) for info in stopped
    ]
