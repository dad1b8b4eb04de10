"""The default executor: every job runs at once, in the calling thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from iterflow.executors.base import Executor

__all__ = ["LocalExecutor"]


class _Done:
    """A future that is finished when made: no lock, no condition variable.

    ``concurrent.futures.Future`` costs a ``threading.Condition`` per job,
    which is most of the per-child cost of a large map run in one thread.
    """

    __slots__ = ("_error", "_value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class LocalExecutor(Executor):
    """Run each job synchronously in the flow runner's own thread.

    The simplest and fastest executor for small flows and tight loops: no
    threads, no pickling. Tasks run one after another in dependency order.

    >>> from iterflow.executors import LocalExecutor
    >>> flow.run(executor=LocalExecutor())   # doctest: +SKIP
    """

    capacity = 1
    runs_inline = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass (one that counts or wraps jobs) must see every job, so it does not
        # run inline unless it says so itself.
        super().__init_subclass__(**kwargs)
        if "runs_inline" not in cls.__dict__:
            cls.runs_inline = False

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               shared: Mapping[str, Any] | None = None) -> _Done:
        try:
            return _Done(fn(*args, **shared) if shared else fn(*args))
        except Exception as exc:  # the runner decides what a crashed job means
            return _Done(error=exc)

    def wait(self, futures: Iterable[_Done]) -> tuple[set[_Done], set[_Done]]:
        return set(futures), set()  # every local future is finished when submit returns

    def result(self, future: _Done) -> Any:
        return future.result()
