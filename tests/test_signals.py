"""Signals: exceptions a task raises to say what happens next."""

from __future__ import annotations

import pytest

from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS, Signal


@pytest.mark.parametrize("signal", [LOOP, FAIL, SUCCESS, SKIP, RETRY])
def test_signals_are_exceptions_with_message_and_result(signal):
    assert issubclass(signal, Signal) and issubclass(signal, Exception)
    raised = signal("why", result=3)
    assert (raised.message, raised.result, raised.has_result) == ("why", 3, True)
    assert str(raised) == "why"


def test_a_signal_without_a_result_has_result_none():
    loop = LOOP()
    assert loop.result is None and loop.has_result is False and loop.message is None


def test_a_result_of_none_is_still_a_result():
    assert LOOP(result=None).has_result is True
