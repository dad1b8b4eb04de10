"""Signals: exceptions a task raises to tell the engine what to do next.

A signal is not an error. The engine catches it the moment the task's function
raises it and turns it into an outcome (``Looped``, ``Failed``, ``Success``,
``Skipped``, ``Retrying``); it never travels further than that.

>>> from iterflow.signals import LOOP
>>> def step(n):
...     raise LOOP(result=n + 1)    # run me again with loop_result = n + 1
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAIL", "LOOP", "RETRY", "SKIP", "SUCCESS", "Signal"]

_NO_RESULT: Any = object()


class Signal(Exception):
    """Base of all signals: carries an optional ``message`` and ``result``."""

    def __init__(self, message: str | None = None, result: Any = _NO_RESULT) -> None:
        super().__init__(message)
        self.message = message
        self.has_result = result is not _NO_RESULT
        self.result = None if result is _NO_RESULT else result


class LOOP(Signal):
    """Run this task again at once with ``loop_index + 1`` and ``loop_result = result``.

    ``LOOP()`` with no result passes ``None`` as the next ``loop_result``.
    ``label`` is a short text recorded with the iteration this ``LOOP`` ends
    (cut to 200 characters), shown in ``iterflow show RUN --iterations`` and
    the dashboard; it wins over ``iterflow.set_iteration_label`` in that iteration.

    >>> raise LOOP(result=42, label="page 7")   # doctest: +SKIP
    """

    def __init__(self, message: str | None = None, result: Any = _NO_RESULT, *,
                 label: str | None = None) -> None:
        super().__init__(message, result)
        self.label = label


class FAIL(Signal):
    """End the task run (and its loop) as ``Failed`` with ``message``."""


class SUCCESS(Signal):
    """End the task run (and its loop) as ``Success`` with ``result``."""


class SKIP(Signal):
    """End the task run (and its loop) as ``Skipped``."""


class RETRY(Signal):
    """Retry the current iteration with the same ``loop_result``, after ``retry_delay``."""
