"""Run jobs on a pool of threads: parallelism for I/O-bound tasks."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from iterflow.executors.base import Executor

__all__ = ["ThreadExecutor"]


class ThreadExecutor(Executor):
    """Run jobs on ``max_workers`` threads (Python's default when None).

    Each job runs in a copy of the submitting thread's ``contextvars`` context,
    so user context (``with iterflow.context(...)``) reaches the task.

    ``async def`` tasks do not take a thread of the pool: the runner awaits
    them on the run's one event loop, side by side (``flow.run(max_concurrency=N)``),
    so they share clients and are not limited to ``max_workers`` at once.

    >>> from iterflow.executors import ThreadExecutor
    >>> flow.run(executor=ThreadExecutor(max_workers=8))   # doctest: +SKIP
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    @property
    def capacity(self) -> int | None:  # type: ignore[override]
        return self._pool._max_workers if self._pool is not None else self.max_workers

    @contextlib.contextmanager
    def start(self) -> Iterator[ThreadExecutor]:
        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="iterflow")
        self._pool = pool
        try:
            yield self
        finally:
            self._pool = None
            # Don't wait for abandoned (timed-out) work; it runs on daemon threads.
            pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Future:
        if self._pool is None:
            raise RuntimeError("ThreadExecutor.submit() called outside executor.start()")
        ctx = contextvars.copy_context()
        return self._pool.submit(ctx.run, fn, *args)

    def wait(self, futures: Iterable[Future]) -> tuple[set[Future], set[Future]]:
        done, not_done = futures_wait(list(futures), return_when=FIRST_COMPLETED)
        return set(done), set(not_done)

    def result(self, future: Future) -> Any:
        return future.result()

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"
