"""The default executor: every job runs at once, in the calling thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from iterflow.executors.base import Executor

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """Run each job synchronously in the flow runner's own thread.

    The simplest and fastest executor for small flows and tight loops: no
    threads, no pickling. Tasks run one after another in dependency order.

    >>> from iterflow.executors import LocalExecutor
    >>> flow.run(executor=LocalExecutor())   # doctest: +SKIP
    """

    capacity = 1

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the runner decides what a crashed job means
            future.set_exception(exc)
        return future

    def wait(self, futures: Iterable[Future]) -> tuple[set[Future], set[Future]]:
        done = set(futures)  # every local future is finished when submit returns
        return done, set()

    def result(self, future: Future) -> Any:
        return future.result()
