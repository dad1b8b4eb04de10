"""The public surface: the headline example of DESIGN §2, names and errors."""

from __future__ import annotations

import re

import iterflow
import iterflow.errors as errors
import iterflow.signals
import iterflow.states
import iterflow.triggers
from iterflow import Flow, task
from iterflow.signals import LOOP


def build_headline_flow():
    # DESIGN §2, as written.
    @task
    def accumulate(x, iterations):
        result = x + iterflow.context.get("loop_result", 0)
        if iterflow.context.loop_index < iterations:
            raise LOOP(result=result)
        return result

    with Flow("looping accumulator") as flow:
        y = accumulate(x=1, iterations=5)
    return flow, y


def test_headline_example_with_no_store():
    flow, y = build_headline_flow()
    state = flow.run(store=None)
    assert state.is_successful()
    assert state.result[y].result == 6         # iterations 0..5, so 6 runs of the task
    assert state.result[y].loop_count == 6


def test_headline_example_exactly_as_written():
    # ITERFLOW_HOME points at this test's tmp_path, so the default store is private.
    flow, y = build_headline_flow()
    state = flow.run()
    assert state.is_successful()
    assert state.result[y].result == 6         # iterations 0..5, so 6 runs of the task


def test_headline_example_events_are_legal(run, sink):
    flow, y = build_headline_flow()
    assert run(flow).result[y].result == 6
    assert [s.name for s in sink.task_states("accumulate")] == ["Running", "Looped"] * 5 + [
        "Running", "Success"
    ]


def test_public_names():
    for name in ("task", "Task", "Flow", "Parameter", "unmapped", "flatten", "ifelse", "switch",
                 "merge", "case", "context", "LOOP"):
        assert name in iterflow.__all__
        assert getattr(iterflow, name) is not None
    assert iterflow.LOOP is LOOP
    assert {"LOOP", "FAIL", "SUCCESS", "SKIP", "RETRY"} <= set(iterflow.signals.__all__)
    for name in ("Pending", "Running", "Looped", "Retrying", "Success", "Cached", "Mapped",
                 "Failed", "TriggerFailed", "TimedOut", "Skipped", "Cancelled"):
        assert hasattr(iterflow.states, name)
    for name in ("all_successful", "all_failed", "any_successful", "any_failed",
                 "all_finished", "always_run"):
        assert callable(getattr(iterflow.triggers, name))


def test_one_error_base():
    for name in errors.__all__:
        if name == "RunCancelled":  # a stop, not an error: a BaseException like Ctrl-C
            assert not issubclass(errors.RunCancelled, Exception)
            continue
        assert issubclass(getattr(errors, name), errors.IterflowError)
    assert issubclass(errors.CycleError, errors.FlowDefinitionError)
    assert issubclass(errors.RunNotResumable, errors.StoreError)


# What each error also is, so that an `except <builtin>` written before it existed still works.
ALSO_BUILTIN = {
    "FlowDefinitionError": ValueError,
    "CycleError": ValueError,
    "OutsideFlowError": RuntimeError,
    "ArgumentError": TypeError,
    "OptionError": ValueError,
    "ParameterError": ValueError,
    "MapError": ValueError,
    "MetricError": ValueError,
    "LoopLimitError": RuntimeError,
    "InvalidTransition": RuntimeError,
    "ExecutorError": RuntimeError,
    "SerializationError": TypeError,
    "StoreError": RuntimeError,
    "RunNotResumable": RuntimeError,
    "SubflowFailed": RuntimeError,
    "SubflowParameterError": TypeError,  # and a ValueError, as a ParameterError
    "ScheduleError": ValueError,
    "ScheduleParameterError": ValueError,
    "ServeConflict": RuntimeError,
    "RunTakenOver": RuntimeError,
    "UnsupportedTaskError": TypeError,
    "TaskRunNameError": ValueError,  # a FlowDefinitionError and an OptionError
    "LoopBlockedWarning": RuntimeWarning,  # a warning; the error base makes -W error catchable
}


def test_every_error_is_also_the_builtin_it_stands_for():
    assert set(ALSO_BUILTIN) == set(errors.__all__) - {"IterflowError", "RunCancelled"}
    for name, builtin in ALSO_BUILTIN.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.IterflowError) and issubclass(cls, builtin), name
    assert issubclass(errors.OutsideFlowError, errors.FlowDefinitionError)


def test_the_tree_in_the_docstring_names_every_error():
    tree = errors.__doc__.split("::")[1]
    for name in errors.__all__:
        assert re.search(rf"^\s*(?:[│├└─ ]*){name}\b", tree, re.MULTILINE), name


def test_except_value_error_still_catches_a_bad_flow_option_or_parameter():
    @task
    def inc(x):
        return x + 1

    caught = []
    for build in (
        lambda: Flow(""),
        lambda: iterflow.Task(max_retries=-1),
        lambda: iterflow.Parameter(""),
    ):
        try:
            build()
        except ValueError as exc:
            caught.append(type(exc))
    assert caught == [errors.OptionError, errors.OptionError, errors.ParameterError]

    with Flow("cycle") as flow:
        a = inc(1)
        b = inc(a)
    try:
        flow.add_edge(b, a, key="x")
    except ValueError as exc:
        assert isinstance(exc, errors.CycleError)
    else:
        raise AssertionError("a cycle was accepted")

    with Flow("needs n") as flow:
        inc(iterflow.Parameter("n"))
    try:
        flow.run(store=None)
    except ValueError as exc:
        assert isinstance(exc, errors.ParameterError) and "'n'" in str(exc)
    else:
        raise AssertionError("a missing parameter was accepted")


def test_except_type_error_and_runtime_error_still_catch_what_they_caught():
    @task
    def inc(x):
        return x + 1

    with Flow("bad call"):
        try:
            inc(1, 2)
        except TypeError as exc:
            assert isinstance(exc, errors.ArgumentError) and "'inc'" in str(exc)
        else:
            raise AssertionError("a call with too many arguments was accepted")
    try:
        inc(1)  # no flow
    except RuntimeError as exc:
        assert isinstance(exc, errors.OutsideFlowError) and "with Flow" in str(exc)
    else:
        raise AssertionError("a call outside a flow was accepted")


def test_naming_is_public():
    assert "set_iteration_label" in iterflow.__all__
    assert iterflow.set_iteration_label is iterflow.naming.set_iteration_label
    assert callable(iterflow.context.set_iteration_label)
    assert iterflow.LOOP(result=1, label="page 1").label == "page 1"
    assert iterflow.LOOP().label is None
