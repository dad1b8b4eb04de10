"""One event loop per thread, kept for the thread's life.

Where a job that awaits an async task runs on a thread the engine does not
own (a Dask worker's thread, a custom executor's), it runs the coroutine on
this thread's loop, made on first use and reused by every later job on the
thread. A loop per call (``asyncio.run``) would close the loop a task's
client was bound to, and the next call would meet "Event loop is closed".
The loop closes when its thread ends.

Nothing here knows about tasks or flows: it is below the engine, beside
``iterflow.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from iterflow.errors import IterflowError

__all__ = ["run_on_thread_loop", "thread_loop"]

T = TypeVar("T")

_local = threading.local()


class _Holder:
    """Owns a thread's loop; closing it when the thread's locals go away."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self.loop.is_running():
                self.loop.close()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop (made on first use, reused after)."""
    holder = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _Holder()
    return holder.loop


def run_on_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on this thread's loop and return its value.

    Refuses to run inside a running event loop, which cannot be entered
    again from the same thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise IterflowError(
            "an async task's job was called from inside a running event loop, which cannot "
            "run a second one in the same thread; run the job on a worker thread"
        )
    return thread_loop().run_until_complete(coro)
