"""Signals while a run is driven: SIGTERM cancels it, Ctrl-C reaches it under asyncio.

Both are context managers :func:`iterflow.runtime.run_flow` (and its worker
thread under a running event loop) wraps a run in. Signal handlers can only be
installed from the main thread: elsewhere both do nothing.

A signal's exception is raised wherever the main thread is, and the runner has
a few statements that must not be cut in two: a job handed to the executor
and its future recorded as running (cut there, the job ran on, unnamed and
uncancelled). :func:`signals_held` defers SIGTERM's and Ctrl-C's exception
over those to the end of the ``with``: :func:`sigterm_cancels` installs the
handlers that do so (for Ctrl-C only in place of Python's own handler; a
user's or asyncio's is left alone, and its exception does not wait).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from iterflow.errors import RunCancelled

__all__ = ["ctrl_c_raises", "signals_held", "sigterm_cancels"]


class _Hold:
    """The main thread's deferral of a cancelling signal: how deep, and what waits.

    Only the main thread enters it (signal handlers run there), so it needs no lock.
    """

    __slots__ = ("depth", "pending")

    def __init__(self) -> None:
        self.depth = 0
        self.pending: BaseException | None = None

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self.depth -= 1
        if self.depth or self.pending is None:
            return
        pending, self.pending = self.pending, None
        # The cancel outranks an ordinary error on its way (a job that could not be
        # sent): the run is stopping. Another cancel or an exit goes on as it is.
        if kind is None or issubclass(kind, Exception):
            raise pending

    def stop(self, exc: BaseException) -> None:
        """Raise ``exc`` now, or at the end of the outermost hold."""
        if self.depth:
            if self.pending is None:
                self.pending = exc
            return
        raise exc


_MAIN_HOLD = _Hold()


def signals_held() -> contextlib.AbstractContextManager[None]:
    """A context in which SIGTERM's and Ctrl-C's exception wait until it ends.

    For the runner's thread to take once per run: on the main thread the
    hold the handlers of :func:`sigterm_cancels` consult; elsewhere, where no
    signal's exception is raised, a context that does nothing.
    """
    if threading.current_thread() is threading.main_thread():
        return _MAIN_HOLD
    return contextlib.nullcontext()


@contextlib.contextmanager
def sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunCancelled` while the run is driven from the main thread.

    The runner records a cancelled run as ``Cancelled`` (resumable) rather than
    dying mid-write; signal handlers can only be installed from the main thread.
    Both SIGTERM's exception and Ctrl-C's ``KeyboardInterrupt`` (when Python's
    own handler is installed: not one of the user's or asyncio's) wait for the
    end of a :func:`signals_held`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum: int, frame: Any) -> None:
        _MAIN_HOLD.stop(RunCancelled("cancelled by SIGTERM"))

    def interrupt(signum: int, frame: Any) -> None:
        _MAIN_HOLD.stop(KeyboardInterrupt())

    previous = signal.signal(signal.SIGTERM, cancel)
    previous_int = None
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous_int = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """Inside ``asyncio.run``, let Ctrl-C raise ``KeyboardInterrupt`` while the run is waited on.

    asyncio's own handler only asks its main task to stop at its next ``await``,
    and that task is blocked in this wait until the run ends.
    """
    import asyncio

    previous = signal.getsignal(signal.SIGINT)
    handler = getattr(previous, "func", previous)  # asyncio.Runner installs a partial
    if threading.current_thread() is not threading.main_thread() or not isinstance(
        getattr(handler, "__self__", None), asyncio.Runner
    ):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
