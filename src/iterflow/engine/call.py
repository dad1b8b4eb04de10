"""Run one iteration of a task's function and capture what happened.

:func:`call_once` never lets an exception out (except ``BaseException``s like
``KeyboardInterrupt``, which belong to the runner): a return value, a signal,
an error or a timeout all come back as an :class:`Outcome`. The loop driver
(:mod:`iterflow.engine.expand`) turns outcomes into states.

A per-iteration ``timeout`` runs the function on a daemon thread and waits at
most that long; a hung iteration is abandoned (Python cannot kill a thread),
so it never hangs the flow.

:func:`call_once_async` is the same for an ``async def`` task: it awaits the
coroutine, and a ``timeout`` is asyncio's, which cancels the coroutine when
the time is up (no thread, nothing left running). ``CancelledError`` from
anywhere else is not an outcome: it means the run is being cancelled, and
belongs to the loop driver. Printed lines of an async task (``log_stdout``)
go to that task's sink even while other async tasks print, through a
``sys.stdout`` that asks a context variable where to write.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS

__all__ = [
    "ERRORED",
    "FAILED",
    "LOOPED",
    "RETRY_ASKED",
    "RETURNED",
    "SKIPPED",
    "SUCCEEDED",
    "TIMED_OUT",
    "Outcome",
    "call_once",
    "call_once_async",
    "error_message",
    "from_exception",
]

# Outcome kinds, as small ints: the loop's hot path compares them often.
RETURNED, LOOPED, FAILED, SUCCEEDED, SKIPPED, RETRY_ASKED, ERRORED, TIMED_OUT = range(8)

_SIGNAL_KINDS: dict[type[Exception], int] = {
    LOOP: LOOPED, FAIL: FAILED, SUCCESS: SUCCEEDED, SKIP: SKIPPED, RETRY: RETRY_ASKED,
}


class Outcome:
    """What one run of the function produced: ``kind``, ``value`` and, for errors, text.

    ``label`` is the iteration label a ``LOOP(label=...)`` gave, as given.
    """

    __slots__ = ("kind", "label", "message", "traceback", "value")

    def __init__(self, kind: int, value: Any = None, message: str | None = None,
                 tb: str | None = None, label: Any = None) -> None:
        self.kind = kind
        self.value = value
        self.message = message
        self.traceback = tb
        self.label = label


def from_exception(exc: Exception) -> Outcome:
    """The :class:`Outcome` of a call that raised ``exc``: a signal's kind, else ERRORED."""
    kind = _SIGNAL_KINDS.get(type(exc))
    if kind is None:
        for signal_type, signal_kind in _SIGNAL_KINDS.items():
            if isinstance(exc, signal_type):
                kind = signal_kind
                break
    if kind is not None:
        signal: Any = exc  # a Signal: it has a result and a message (a LOOP, a label)
        return Outcome(kind, signal.result, signal.message, None, getattr(signal, "label", None))
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(ERRORED, exc, error_message(exc), text)


def error_message(exc: BaseException) -> str:
    """``"ValueError: bad input"``: how a failed task run's message names its exception.

    An exception whose ``__str__`` itself raises still fails its task run as
    itself (with retries, handlers and a record), not as a crash of the engine.
    """
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception as failed:
        return (f"{type(exc).__name__} (its message could not be read: "
                f"{type(failed).__name__} in its __str__)")


def call_once(
    fn: Callable[..., Any],
    inputs: dict[str, Any],
    timeout: float | None = None,
    stdout: Callable[[str], None] | None = None,
) -> Outcome:
    """Call ``fn(**inputs)`` once; return its :class:`Outcome`."""
    if timeout is None and stdout is None:
        try:
            return Outcome(RETURNED, fn(**inputs))
        except Exception as exc:
            return from_exception(exc)
    if stdout is not None:
        fn = _capturing_stdout(fn, stdout)
    if timeout is None:
        try:
            return Outcome(RETURNED, fn(**inputs))
        except Exception as exc:
            return from_exception(exc)
    return _call_with_timeout(fn, inputs, timeout)


def _call_with_timeout(fn: Callable[..., Any], inputs: dict[str, Any], timeout: float) -> Outcome:
    ctx = contextvars.copy_context()
    box: list[Outcome] = []

    def target() -> None:
        try:
            box.append(Outcome(RETURNED, ctx.run(fn, **inputs)))
        except Exception as exc:
            box.append(from_exception(exc))
        except BaseException as exc:  # SystemExit in a task thread: report, don't vanish
            box.append(from_exception(RuntimeError(f"task raised {type(exc).__name__}: {exc}")))

    thread = threading.Thread(target=target, daemon=True, name="iterflow-timeout")
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not box:
        return Outcome(
            TIMED_OUT, None, f"the iteration ran longer than its timeout of {timeout:g} s"
        )
    return box[0]


class _LineWriter(io.TextIOBase):
    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line:
                self._sink(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._sink(self._buffer)
            self._buffer = ""


def _capturing_stdout(fn: Callable[..., Any], sink: Callable[[str], None]) -> Callable[..., Any]:
    def wrapped(**inputs: Any) -> Any:
        writer = _LineWriter(sink)
        try:
            with contextlib.redirect_stdout(writer):
                return fn(**inputs)
        finally:
            writer.flush()

    return wrapped


# -- async tasks -------------------------------------------------------------------
async def call_once_async(
    fn: Callable[..., Any],
    inputs: dict[str, Any],
    timeout: float | None = None,
    stdout: Callable[[str], None] | None = None,
) -> Outcome:
    """Await ``fn(**inputs)`` once; return its :class:`Outcome`.

    ``asyncio.CancelledError`` is not caught: unless it comes from the
    timeout, the run is being cancelled.
    """
    if timeout is None and stdout is None:
        try:
            return Outcome(RETURNED, await fn(**inputs))
        except Exception as exc:
            return from_exception(exc)
    import asyncio  # here, not at the top: a run without async tasks never loads asyncio

    limit = asyncio.timeout(timeout)
    writer = _LineWriter(stdout) if stdout is not None else None
    try:
        async with limit:
            if writer is None:
                return Outcome(RETURNED, await fn(**inputs))
            with _printing_to(writer):
                return Outcome(RETURNED, await fn(**inputs))
    except TimeoutError as exc:
        if limit.expired():
            return Outcome(
                TIMED_OUT, None, f"the iteration ran longer than its timeout of {timeout:g} s"
            )
        return from_exception(exc)
    except Exception as exc:
        return from_exception(exc)
    finally:
        if writer is not None:
            writer.flush()


_print_sink: contextvars.ContextVar[_LineWriter | None] = contextvars.ContextVar(
    "iterflow_print_sink", default=None
)


class _TaskStdout(io.TextIOBase):
    """``sys.stdout`` while async tasks capture prints: each writes to its own sink.

    ``redirect_stdout`` swaps one global, which is wrong the moment two async
    tasks interleave on the loop; the sink lives in a context variable instead,
    which every asyncio task has its own copy of.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.users = 0

    def write(self, text: str) -> int:
        sink = _print_sink.get()
        return (sink if sink is not None else self.real).write(text)

    def flush(self) -> None:
        sink = _print_sink.get()
        (sink if sink is not None else self.real).flush()


@contextlib.contextmanager
def _printing_to(writer: _LineWriter) -> Iterator[None]:
    current = sys.stdout
    proxy = current if isinstance(current, _TaskStdout) else _TaskStdout(current)
    sys.stdout = proxy
    proxy.users += 1
    token = _print_sink.set(writer)
    try:
        yield
    finally:
        _print_sink.reset(token)
        proxy.users -= 1
        if proxy.users == 0 and sys.stdout is proxy:
            sys.stdout = proxy.real
