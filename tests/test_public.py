"""The public surface: the headline example of DESIGN §2, names and errors."""

from __future__ import annotations

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
