"""Run jobs on a pool of threads: parallelism for I/O-bound tasks.

Cancelling. Python cannot stop a thread, so a cancelled run (Ctrl-C,
SIGTERM) cannot stop a task that is inside a long call (a download, a
``sleep``): the runner waits a moment for loops to stop at their next
iteration, then calls :meth:`ThreadExecutor.cancel` for what is left. From
then on:

- the pool's threads are **daemon threads**, so the process exits at once
  instead of waiting for them (``concurrent.futures.ThreadPoolExecutor``
  joins its threads at interpreter exit, which kept a cancelled ``iterflow
  run`` alive until the task ended);
- the jobs left running are **named** in a warning (each worker thread also
  carries the name of the task run it is running);
- whatever they do afterwards is **not heard**: their events are dropped, so
  a cancelled run's display and store see nothing after the cancellation (no
  late "Success", no write to a store sink that is already closed).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from typing import Any

from iterflow.executors.base import Executor

__all__ = ["ThreadExecutor"]

logger = logging.getLogger("iterflow.executors")

_IDLE_NAME = "iterflow-worker"


class _DaemonPool:
    """A minimal thread pool whose threads never hold the process open.

    Threads are started as jobs arrive, up to ``max_workers``, and wait on
    one queue; :meth:`shutdown` cancels queued jobs and lets idle threads go
    without joining any of them.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False
        #: Future -> the key of its job, while the job runs.
        self.running: dict[Future, str] = {}

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], key: str) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._queue.put((future, fn, args, key))
            # A thread waiting for work takes it; else start one, if the pool may grow.
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._work, name=_IDLE_NAME, daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, key = item
            if future.set_running_or_notify_cancel():
                me.name = f"iterflow {key}"
                self.running[future] = key
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    self.running.pop(future, None)
                    me.name = _IDLE_NAME
            if self._closed:
                return
            self._idle.release()

    def shutdown(self) -> None:
        """Cancel queued jobs and let the threads go; wait for none of them."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)


class ThreadExecutor(Executor):
    """Run jobs on ``max_workers`` threads (Python's default when None).

    Each job runs in a copy of the submitting thread's ``contextvars`` context,
    so user context (``with iterflow.context(...)``) reaches the task. See the
    module docstring for what a cancelled run does with jobs it cannot stop.

    ``async def`` tasks do not take a thread of the pool: the runner awaits
    them on the run's one event loop, side by side (``flow.run(max_concurrency=N)``),
    so they share clients and are not limited to ``max_workers`` at once.

    >>> from iterflow.executors import ThreadExecutor
    >>> flow.run(executor=ThreadExecutor(max_workers=8))   # doctest: +SKIP
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._pool: _DaemonPool | None = None
        # The last pool's running jobs: the runner cancels after start() has ended.
        self._running: dict[Future, str] = {}
        # Set once the run gave up on its jobs: what they emit afterwards is dropped.
        self._deaf = threading.Event()
        # The runner's cancel flag (from ``shared``), and whether wait() has handed the
        # runner back its turn once it was set (see wait).
        self._cancel_flag: Any = None
        self._told = False

    @property
    def capacity(self) -> int | None:  # type: ignore[override]
        return self._pool.max_workers if self._pool is not None else self.max_workers

    @contextlib.contextmanager
    def start(self) -> Iterator[ThreadExecutor]:
        if self._pool is not None:  # started already (see Executor.start): use that pool
            yield self
            return
        # concurrent.futures' default: enough threads for I/O, bounded.
        workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
        pool = _DaemonPool(workers)
        self._pool = pool
        self._running = pool.running
        self._deaf.clear()
        self._told = False
        try:
            yield self
        finally:
            self._pool = None
            # Don't wait for abandoned (timed-out, cancelled) work: it runs on daemon threads.
            pool.shutdown()

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               shared: Mapping[str, Any] | None = None) -> Future:
        if self._pool is None:
            raise RuntimeError("ThreadExecutor.submit() called outside executor.start()")
        ctx = contextvars.copy_context()
        if shared and shared.get("cancel") is not None:
            self._cancel_flag = shared["cancel"]
        job = functools.partial(fn, **shared) if shared else fn
        return self._pool.submit(ctx.run, (job, *args), key or getattr(fn, "__name__", "job"))

    def wait(self, futures: Iterable[Future]) -> tuple[set[Future], set[Future]]:
        """Block until a job is done — or, once, until the run is stopped from another
        thread (``iterflow cancel``): a job inside a long call would hold the runner
        here, where Ctrl-C and SIGTERM reach it but a stop from elsewhere does not."""
        jobs = list(futures)
        flag = self._cancel_flag
        if flag is None or self._told:
            done, not_done = futures_wait(jobs, return_when=FIRST_COMPLETED)
            return set(done), set(not_done)
        while True:
            done, not_done = futures_wait(jobs, timeout=0.05, return_when=FIRST_COMPLETED)
            if done:
                return set(done), set(not_done)
            if flag.is_set():
                self._told = True  # the runner now winds the run down; no more polling
                return set(), set(not_done)

    def result(self, future: Future) -> Any:
        return future.result()

    def event_relay(self, emit: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        """``emit``, until :meth:`cancel` gives up on the jobs still running."""
        if emit is None:
            return None
        deaf = self._deaf

        def relay(event: Any) -> None:
            if not deaf.is_set():
                emit(event)

        return relay

    def cancel(self, futures: Iterable[Any]) -> None:
        """Cancel jobs not started; name those that are, and stop listening to them."""
        futures = list(futures)
        jobs = self._running
        running = [jobs[f] for f in futures if f in jobs and not f.done()]
        self._deaf.set()
        super().cancel(futures)
        if running:
            logger.warning(
                "%d task run%s still running on a thread that cannot be stopped: %s; "
                "left to end with the process, and not recorded further",
                len(running), "" if len(running) == 1 else "s", ", ".join(running),
            )

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"
