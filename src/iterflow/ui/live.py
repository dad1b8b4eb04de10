"""Live updates: one poller for the whole server, one Server-Sent-Events stream per page.

The :class:`Hub` asks the store "has anything changed?" once per tick
(``interval``, 0.5 s: at most two updates a second) for every viewer
together. On SQLite that is ``PRAGMA data_version`` on a connection of its
own — a number bumped by every other connection's commit, answered without
reading a table; elsewhere (and on SQLite when it moved) the newest state
and log ids, both primary-key lookups. A change, or every ``refresh``
seconds regardless (a run whose process died turns ``Crashed`` without any
write), bumps :attr:`Hub.version` and wakes the streams.

Each stream (:func:`stream`) then re-renders its page's fragments and sends
only those whose HTML differs from what it sent last, as SSE events named
after the ``sse-swap`` targets in the page; htmx's SSE extension swaps them
in. A run page's stream sends ``end`` and closes once the run has finished
(the page's ``sse-close="end"`` stops the browser reconnecting). With
JavaScript off, none of this runs and the pages are plain links.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from iterflow.store import RunStore

__all__ = ["Hub", "stream"]


class Hub:
    """Polls the store for changes on one thread; streams wait on :meth:`wait`."""

    def __init__(self, store: RunStore, *, interval: float = 0.5, refresh: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.refresh = refresh
        self.version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start polling (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll, name="iterflow-ui-poll",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop polling and wake every stream."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._wake()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def wait(self, seen: int) -> int:
        """Wait until :attr:`version` is past ``seen`` (or the hub stops); return it."""
        self.start()
        while self.version <= seen and not self._stop.is_set():
            event = asyncio.Event()
            with self._lock:
                self._waiters.append((asyncio.get_running_loop(), event))
            if self.version > seen or self._stop.is_set():
                break
            await event.wait()
        return self.version

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def _poll(self) -> None:
        from iterflow.store import change_marker

        raw = None
        if self.store.engine.dialect.name == "sqlite":
            with contextlib.suppress(Exception):
                raw = self.store.engine.raw_connection()
        data_version = None
        marker = None
        since_refresh = 0.0
        while not self._stop.wait(self.interval):
            since_refresh += self.interval
            changed = False
            try:
                if raw is not None:
                    cursor = raw.cursor()
                    current = cursor.execute("PRAGMA data_version").fetchone()[0]
                    cursor.close()
                    moved, data_version = current != data_version, current
                else:
                    moved = True
                if moved:
                    new = change_marker(self.store)
                    changed, marker = new != marker, new
            except Exception:  # a store busy or gone for a moment: try next tick
                changed = False
            if changed or since_refresh >= self.refresh:
                since_refresh = 0.0
                self.version += 1
                self._wake()
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()


Render = Callable[[], "tuple[dict[str, str], bool]"]


async def stream(
    hub: Hub, render: Render, request: Any, *, fresh: bool = False
) -> AsyncIterator[dict[str, str]]:
    """SSE events for one page: changed fragments after each tick, ``end`` when done.

    ``render()`` (run in a worker thread) returns the page's fragments by
    event name and whether the page is finished updating. The first round
    sends every fragment (whatever changed between the page's rendering and
    the stream's start); later rounds only those whose HTML changed.
    ``fresh``: every fragment is new content to append (log lines), sent
    whenever ``render`` returns it, and the next round follows at once when
    the render was not finished reading.
    """
    sent: dict[str, str] = {}
    seen = hub.version
    while True:
        fragments, finished = await run_in_threadpool(render)
        for name, html in fragments.items():
            if fresh or sent.get(name) != html:
                sent[name] = html
                yield {"event": name, "data": html}
        if finished:
            yield {"event": "end", "data": "end"}
            return
        seen = await hub.wait(seen)
        if hub.stopped or await request.is_disconnected():
            return
