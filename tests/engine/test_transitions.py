"""One path for state transitions: handlers of tasks and flows, checks, events."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.engine.transitions import apply_handlers, emit_or_fail, settle, task_run_event
from iterflow.errors import InvalidTransition
from iterflow.events import TaskRunEvent
from iterflow.states import Failed, Pending, Running, Skipped, Success
from iterflow.store import get_run, open_store


@task
def ok():
    return "ok"


def broken_flow_handler(flow, old, new):
    if new.is_finished():
        raise ValueError("handler bug")
    return new


# -- the bug: a flow handler that raises ------------------------------------------------
@pytest.mark.parametrize("when", ["start", "end"])
def test_a_flow_handler_that_raises_ends_the_run_failed_in_memory_and_in_the_store(
    tmp_path, when
):
    def at_start(flow, old, new):
        if new.is_running():
            raise ValueError("handler bug")
        return new

    handler = at_start if when == "start" else broken_flow_handler
    with Flow("flow handler raises", state_handlers=[handler]) as flow:
        ok()
    with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        state = iterflow.runtime.run_flow(flow, store=store)  # no exception escapes
        assert isinstance(state, Failed)
        assert handler.__name__ in state.message and "handler bug" in state.message
        assert isinstance(state.result, dict)
        recorded = get_run(state.run_id, store=store)
    assert recorded.recorded_state == "Failed" and recorded.state == "Failed"
    assert handler.__name__ in recorded.message and "ValueError: handler bug" in recorded.message


def test_a_flow_handler_returning_an_illegal_state_fails_the_run(run):
    def backwards(flow, old, new):
        return Pending() if new.is_finished() else new

    with Flow("illegal flow move", state_handlers=[backwards]) as flow:
        ok()
    state = run(flow)
    assert isinstance(state, Failed)
    assert "backwards" in state.message and "cannot move from Running to Pending" in state.message


def test_the_flow_handlers_after_a_broken_one_see_its_failure(run):
    seen = []

    def record(flow, old, new):
        seen.append(new.name)

    with Flow("after a broken handler", state_handlers=[broken_flow_handler, record]) as flow:
        ok()
    assert isinstance(run(flow), Failed)
    assert seen == ["Running", "Failed"]


# -- the pieces ---------------------------------------------------------------------------
def test_apply_handlers_names_the_handler_and_the_owner_for_tasks_and_flows():
    def raises(owner, old, new):
        raise RuntimeError("nope")

    t = task(lambda: None, name="t")
    for owner, kind in ((t, "task"), (Flow("f"), "flow")):
        state = apply_handlers(owner, [raises], Pending(), Running(), kind=kind, loop_count=3)
        assert isinstance(state, Failed) and isinstance(state.result, RuntimeError)
        assert state.message == (
            f"state handler 'raises' of {kind} {owner.name!r} raised RuntimeError: nope"
        )
        assert state.loop_count == 3


def test_apply_handlers_checks_each_returned_state():
    def backwards(owner, old, new):
        return Pending()

    state = apply_handlers(task(lambda: None, name="t"), [backwards], Running(), Success())
    assert isinstance(state, Failed) and isinstance(state.result, InvalidTransition)


def test_settle_leaves_a_state_alone_without_handlers_and_passes_it_through_them():
    plain = task(lambda: None, name="plain")
    skipped = Skipped("upstream skipped", loop_count=0)
    assert settle(plain, skipped) is skipped
    watched = plain.copy(state_handlers=[lambda t, old, new: Failed("no skips")])
    assert settle(watched, skipped).message == "no skips"


def test_emit_or_fail_fails_the_task_run_when_the_sink_refuses_and_records_that():
    got = []

    def refuse_success(event):
        if event.state.is_successful():
            raise ValueError("cannot record this")
        got.append(event)

    def make(state, loop_index):
        return task_run_event("run", "run/t", "t", "t", None, loop_index, state)

    state = emit_or_fail(refuse_success, make, Success(result=object()), 4)
    assert isinstance(state, Failed) and state.message == "cannot record this"
    assert state.loop_count == 5
    assert [e.state for e in got] == [state]


def test_task_run_event_makes_the_named_tuple():
    state = Running()
    fast = task_run_event("run", "run/t", "t", "T", 2, 7, state, True, "json", 3)
    slow = TaskRunEvent("run", "run/t", "t", "T", 2, 7, state, True, "json", 3)
    assert fast == slow and type(fast) is TaskRunEvent
    assert fast.loop_index == 7 and fast.block_index == 3
    assert task_run_event("run", "run/t", "t", "T", None, 0, state) == TaskRunEvent(
        "run", "run/t", "t", "T", None, 0, state
    )
