"""States: kinds, predicates, the transition table and pickling."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest
from hypothesis import given, settings

from iterflow import states
from iterflow.core.state import _FINISHED, TRANSITIONS, Kind, state_class
from tests.strategies import states as any_state

PREDICATES = (
    "is_pending", "is_running", "is_looped", "is_retrying", "is_finished", "is_successful",
    "is_failed", "is_skipped", "is_cached", "is_mapped", "is_cancelled",
)

#: For each class, the predicates that are true for it (and only those).
TRUE_FOR = {
    states.Pending: {"is_pending"},
    states.Retrying: {"is_pending", "is_retrying"},
    states.Running: {"is_running"},
    states.Looped: {"is_looped"},
    states.Success: {"is_finished", "is_successful"},
    states.Cached: {"is_finished", "is_successful", "is_cached"},
    states.Mapped: {"is_finished", "is_successful", "is_mapped"},  # with no failed child
    states.Failed: {"is_finished", "is_failed"},
    states.TriggerFailed: {"is_finished", "is_failed"},
    states.TimedOut: {"is_finished", "is_failed"},
    states.Skipped: {"is_finished", "is_successful", "is_skipped"},
    states.Cancelled: {"is_finished", "is_cancelled"},
}


@pytest.mark.parametrize("cls", list(TRUE_FOR), ids=lambda c: c.__name__)
def test_predicates(cls):
    state = cls()
    assert {p for p in PREDICATES if getattr(state, p)()} == TRUE_FOR[cls]


def test_every_kind_has_a_class_and_a_name():
    assert {state_class(kind) for kind in Kind} == set(TRUE_FOR)
    for kind in Kind:
        assert state_class(kind).kind is kind
        assert state_class(kind.value) is state_class(kind)
        assert state_class(kind)().name == kind.value


def test_refinements_match_their_parent_but_skipped_is_not_a_success():
    assert isinstance(states.Cached(), states.Success)
    assert isinstance(states.TriggerFailed(), states.Failed)
    assert isinstance(states.TimedOut(), states.Failed)
    assert isinstance(states.Retrying(), states.Pending)
    assert not isinstance(states.Skipped(), states.Success)
    assert states.Skipped().is_successful()


def test_states_carry_message_result_timestamp_and_loop_fields():
    s = states.Success("done", 6, loop_count=6)
    assert (s.message, s.result, s.loop_count) == ("done", 6, 6)
    assert s.timestamp > 0
    assert states.Looped(result=1, loop_index=3).loop_index == 3
    assert states.Running(loop_index=2).loop_index == 2
    retrying = states.Retrying("again", loop_index=4, run_count=2)
    assert (retrying.loop_index, retrying.run_count) == (4, 2)
    assert states.Failed(traceback="Traceback ...").traceback == "Traceback ..."


def test_mapped_result_and_predicates_follow_the_children():
    good = states.Mapped(
        map_states=[states.Success(result=1), states.Skipped(), states.Cached(result=3)]
    )
    assert good.result == [1, None, 3]
    assert good.is_successful() and not good.is_failed()
    bad = states.Mapped(map_states=[states.Success(result=1), states.TimedOut()])
    assert bad.is_failed() and not bad.is_successful()
    assert states.Mapped(map_states=[states.Cancelled()]).is_failed()
    empty = states.Mapped(map_states=[])
    assert empty.result == [] and empty.is_successful() and empty.is_finished()


def test_repr_shows_kind_message_and_loop_fields():
    assert repr(states.Success(loop_count=3)) == "<Success: loop_count=3>"
    assert repr(states.Looped(loop_index=2)) == "<Looped: loop_index=2>"
    assert repr(states.Failed("boom")) == "<Failed: 'boom'>"
    assert repr(states.Pending()) == "<Pending>"


def test_transition_table():
    assert set(TRANSITIONS) == set(Kind)
    for kind in _FINISHED:
        assert TRANSITIONS[kind] == frozenset(), f"{kind} is final"
    assert Kind.LOOPED in TRANSITIONS[Kind.RUNNING]
    assert Kind.RUNNING in TRANSITIONS[Kind.LOOPED]
    assert Kind.RUNNING in TRANSITIONS[Kind.RETRYING]
    assert Kind.LOOPED not in TRANSITIONS[Kind.PENDING]
    assert Kind.PENDING not in TRANSITIONS[Kind.RUNNING]
    assert Kind.MAPPED in TRANSITIONS[Kind.PENDING]
    for kind in (Kind.PENDING, Kind.RUNNING, Kind.LOOPED, Kind.RETRYING):
        assert _FINISHED - {Kind.MAPPED} <= TRANSITIONS[kind]


def fields(state):
    out = {
        "cls": type(state), "message": state.message, "result": state.result,
        "loop_count": state.loop_count, "timestamp": state.timestamp,
        "traceback": state.traceback, "run_id": state.run_id,
    }
    for name in ("loop_index", "run_count"):
        if hasattr(state, name):
            out[name] = getattr(state, name)
    if state.is_mapped():
        out["map_states"] = [fields(c) for c in state.map_states]
    return out


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(any_state())
def test_pickling_round_trips_every_state(state):
    state.run_id = "run-1"
    assert fields(pickle.loads(pickle.dumps(state))) == fields(state)
    assert fields(cloudpickle.loads(cloudpickle.dumps(state))) == fields(state)


def test_pickling_keeps_a_failed_states_exception():
    state = states.Failed("boom", ValueError("boom"), loop_count=2, traceback="tb")
    copy = pickle.loads(pickle.dumps(state))
    assert isinstance(copy.result, ValueError) and str(copy.result) == "boom"
    assert (copy.loop_count, copy.traceback) == (2, "tb")


def test_plain_success_is_the_success_the_class_makes():
    from iterflow.core.state import _all_slots, plain_success

    made, called = plain_success([1], 3), states.Success(result=[1], loop_count=3)
    assert type(made) is states.Success
    fields = _all_slots(states.Success)
    assert {f: getattr(made, f) for f in fields if f != "timestamp"} == {
        f: getattr(called, f) for f in fields if f != "timestamp"
    }
    assert abs(made.timestamp - called.timestamp) < 60
