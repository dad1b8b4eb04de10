"""DESIGN §7.9: state handlers see every transition, each Looped included; what a handler
returns is the state used, and turning a Looped into a finished state ends the loop."""

from __future__ import annotations

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP
from iterflow.states import Failed, Looped, Running, Skipped, Success


def three_iterations_with(*handlers):
    calls = []

    def fn():
        calls.append(iterflow.context.loop_index)
        if iterflow.context.loop_index < 2:
            raise LOOP(result=iterflow.context.get("loop_result", 0) + 1)
        return iterflow.context.loop_result

    return task(fn, name="looper", state_handlers=list(handlers), max_loops=20), calls


def test_handlers_see_running_looped_running_looped_running_success(run, executor):
    seen = []

    def record(t, old, new):
        seen.append((old.name, new.name, getattr(new, "loop_index", None)))
        return new

    looper, _ = three_iterations_with(record)
    with Flow("rule 9") as flow:
        looper()
    run(flow, executor=executor)
    assert [(new, index) for _, new, index in seen] == [
        ("Running", 0), ("Looped", 0), ("Running", 1), ("Looped", 1), ("Running", 2),
        ("Success", None),
    ]
    assert [old for old, _, _ in seen] == ["Pending", "Running", "Looped", "Running", "Looped",
                                          "Running"]


def test_a_handler_turning_looped_into_success_ends_the_loop(run, sink):
    def stop_at_first_loop(t, old, new):
        if isinstance(new, Looped):
            return Success("stopped by handler", result=new.result)
        return new

    looper, calls = three_iterations_with(stop_at_first_loop)
    with Flow("stop") as flow:
        made = looper()
    state = run(flow).result[made]
    assert calls == [0]
    assert (state.name, state.result, state.message, state.loop_count) == (
        "Success", 1, "stopped by handler", 1
    )
    assert [s.name for s in sink.task_states("looper")] == ["Running", "Success"]


def test_a_handler_turning_looped_into_failed_ends_the_loop(run):
    def limit(t, old, new):
        if isinstance(new, Looped) and new.loop_index == 1:
            return Failed("too many")
        return new

    looper, calls = three_iterations_with(limit)
    with Flow("fail") as flow:
        made = looper()
    state = run(flow).result[made]
    assert calls == [0, 1]
    assert state.is_failed() and state.loop_count == 2


def test_a_handler_turning_running_into_skipped_ends_the_loop_before_the_iteration(run):
    def skip_second(t, old, new):
        if isinstance(new, Running) and new.loop_index == 1:
            return Skipped("enough")
        return new

    looper, calls = three_iterations_with(skip_second)
    with Flow("skip") as flow:
        made = looper()
    state = run(flow).result[made]
    assert calls == [0]
    assert state.is_skipped() and state.loop_count == 2


def test_the_looped_state_a_handler_returns_is_the_one_used(run):
    seen = []

    def double(t, old, new):
        if isinstance(new, Looped):
            return Looped(new.message, new.result * 100, loop_index=new.loop_index)
        return new

    @task(state_handlers=[double], max_loops=20)
    def looper():
        seen.append(iterflow.context.get("loop_result"))
        if iterflow.context.loop_index < 2:
            raise LOOP(result=iterflow.context.loop_index + 1)
        return iterflow.context.loop_result

    with Flow("replace looped") as flow:
        made = looper()
    assert run(flow).result[made].result == 200
    assert seen == [None, 100, 200]


def test_handlers_see_retrying_with_the_iteration(run):
    seen = []

    def record(t, old, new):
        seen.append((new.name, getattr(new, "loop_index", None)))
        return new

    @task(max_retries=1, state_handlers=[record], max_loops=20)
    def flaky():
        if iterflow.context.loop_index == 1 and iterflow.context.task_run_count == 1:
            raise OSError
        if iterflow.context.loop_index < 1:
            raise LOOP()

    with Flow("retrying") as flow:
        flaky()
    run(flow)
    assert seen == [("Running", 0), ("Looped", 0), ("Running", 1), ("Retrying", 1),
                    ("Running", 1), ("Success", None)]


def test_an_illegal_state_from_a_handler_fails_the_loop_with_its_history(run):
    def bad(t, old, new):
        if isinstance(new, Looped) and new.loop_index == 1:
            return Running(loop_index=2)  # Running -> Running is not a move
        return new

    looper, calls = three_iterations_with(bad)
    with Flow("illegal") as flow:
        made = looper()
    state = run(flow).result[made]
    assert state.is_failed()
    assert "cannot move from Running to Running" in state.message
    assert "Running -> Looped -> Running" in state.message
    assert calls == [0, 1]


def test_handlers_see_a_skip_decided_without_running(run):
    seen = []

    def record(t, old, new):
        seen.append((old.name, new.name))
        return new

    @task
    def skipper():
        from iterflow.signals import SKIP

        raise SKIP

    with Flow("skipped by upstream") as flow:
        task(lambda x: x, name="watched", state_handlers=[record])(skipper())
    run(flow)
    assert seen == [("Pending", "Skipped")]


def test_handlers_see_a_cached_state_and_a_mapped_parent(run):
    seen = []

    def record(t, old, new):
        seen.append((old.name, new.name))
        return new

    @task(cache_for=60, state_handlers=[record])
    def cached():
        return 1

    @task(state_handlers=[record])
    def child(x):
        return x

    with Flow("cached and mapped") as flow:
        cached()
        child.map([1, 2])
    run(flow)
    seen.clear()
    run(flow)
    assert ("Pending", "Cached") in seen
    assert ("Pending", "Mapped") in seen


def test_a_handler_can_turn_a_decided_skip_into_a_failure(run):
    from iterflow.states import Failed

    @task
    def skipper():
        from iterflow.signals import SKIP

        raise SKIP

    def refuse(t, old, new):
        return Failed("skips are not allowed here") if new.is_skipped() else new

    with Flow("no skips") as flow:
        watched = task(lambda x: x, name="watched", state_handlers=[refuse])(skipper())
    state = run(flow)
    assert state.result[watched].is_failed()
    assert state.is_failed()
