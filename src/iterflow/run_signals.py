"""Signals while a run is driven: SIGTERM cancels it, Ctrl-C reaches it under asyncio.

Both are context managers :func:`iterflow.runtime.run_flow` (and its worker
thread under a running event loop) wraps a run in. Signal handlers can only be
installed from the main thread: elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from iterflow.errors import RunCancelled

__all__ = ["ctrl_c_raises", "sigterm_cancels"]


@contextlib.contextmanager
def sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunCancelled` while the run is driven from the main thread.

    The runner records a cancelled run as ``Cancelled`` (resumable) rather than
    dying mid-write; signal handlers can only be installed from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum: int, frame: Any) -> None:
        raise RunCancelled("cancelled by SIGTERM")

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
