"""call_once: one run of a function becomes an Outcome; nothing escapes but BaseExceptions."""

from __future__ import annotations

import threading
import time

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.engine import call
from iterflow.engine.call import call_once
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS


def raising(exc):
    def fn():
        raise exc

    return fn


def test_a_return_value():
    outcome = call_once(lambda x: x * 2, {"x": 21})
    assert (outcome.kind, outcome.value) == (call.RETURNED, 42)


@pytest.mark.parametrize(
    "signal, kind",
    [
        (LOOP("again", result=5), call.LOOPED),
        (FAIL("no", result=5), call.FAILED),
        (SUCCESS("yes", result=5), call.SUCCEEDED),
        (SKIP("skip", result=5), call.SKIPPED),
        (RETRY("retry", result=5), call.RETRY_ASKED),
    ],
)
def test_signals_become_outcomes(signal, kind):
    for timeout in (None, 5):
        outcome = call_once(raising(signal), {}, timeout=timeout)
        assert (outcome.kind, outcome.value, outcome.message) == (kind, 5, signal.message)


def test_a_subclass_of_a_signal_counts_as_that_signal():
    class Stop(SKIP):
        pass

    assert call_once(raising(Stop("x")), {}).kind == call.SKIPPED


def test_an_error_keeps_the_exception_and_its_traceback_text():
    def broken():
        return {}["missing"]

    outcome = call_once(broken, {})
    assert outcome.kind == call.ERRORED
    assert isinstance(outcome.value, KeyError)
    assert outcome.message == "KeyError: 'missing'"
    assert "Traceback (most recent call last)" in outcome.traceback
    assert "in broken" in outcome.traceback
    assert 'return {}["missing"]' in outcome.traceback


def test_base_exceptions_belong_to_the_runner():
    with pytest.raises(KeyboardInterrupt):
        call_once(raising(KeyboardInterrupt()), {})


def test_a_timeout_abandons_a_hung_call(release):
    started = time.monotonic()
    outcome = call_once(lambda: release.wait(30), {}, timeout=0.2)
    assert 0.19 <= time.monotonic() - started < 5  # waits the whole timeout, no longer
    assert outcome.kind == call.TIMED_OUT
    assert "timeout of 0.2 s" in outcome.message


def test_with_a_timeout_a_quick_call_returns_normally_and_errors_keep_their_traceback():
    assert call_once(lambda: 7, {}, timeout=5).value == 7
    outcome = call_once(raising(ValueError("bad")), {}, timeout=5)
    assert outcome.kind == call.ERRORED and "ValueError: bad" in outcome.traceback


def test_with_a_timeout_the_call_sees_the_callers_context():
    with iterflow.context(marker="here"):
        outcome = call_once(lambda: (iterflow.context.marker, threading.current_thread().name),
                            {}, timeout=5)
    assert outcome.value[0] == "here"
    assert outcome.value[1] == "iterflow-timeout"


def test_system_exit_in_a_timed_call_is_reported_not_lost():
    outcome = call_once(raising(SystemExit(3)), {}, timeout=5)
    assert outcome.kind == call.ERRORED
    assert "SystemExit" in outcome.message


def test_stdout_is_captured_line_by_line():
    lines = []

    def chatty():
        print("one")
        print("two", end="")
        return 1

    assert call_once(chatty, {}, stdout=lines.append).value == 1
    assert lines == ["one", "two"]
    lines.clear()
    assert call_once(chatty, {}, timeout=5, stdout=lines.append).value == 1
    assert lines == ["one", "two"]


class _Unreadable(Exception):
    def __str__(self):
        raise RuntimeError("no text")


@pytest.mark.parametrize("executor", [LocalExecutor(), ThreadExecutor(max_workers=2)],
                         ids=["local", "threads"])
def test_an_exception_whose_message_cannot_be_read_fails_its_task_run_as_itself(executor):
    # Its __str__ raising used to fail the task run as a crash of the engine ("did not
    # finish on ..."): no retry, and a message naming the wrong thing.
    calls = []

    @task(max_retries=1)
    def parse():
        calls.append(1)
        raise _Unreadable("x")

    with Flow("unreadable") as flow:
        parse()
    state = flow.run(executor=executor, store=None)
    [final] = state.result.values()
    assert final.is_failed() and len(calls) == 2
    assert final.message == ("task 'parse' in flow 'unreadable', iteration 0, failed: _Unreadable "
                             "(its message could not be read: RuntimeError in its __str__)")
    assert isinstance(final.result, _Unreadable)
