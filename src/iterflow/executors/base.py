"""The executor contract: submit a job, wait for some to finish. That is all.

The flow runner decides *what* runs and in which order; an executor only
decides *where*. A job is a plain callable that runs one task run to its end —
every iteration of its loop, its retries, its timeouts — and returns the task
run's final state, so a looping task never costs a round trip per iteration.

An executor also carries events from where jobs run back to the runner's sinks:
:meth:`Executor.event_relay` turns the runner's ``emit`` into something a job
can call where it runs (for in-process executors, ``emit`` itself).

An executor whose ``submit`` just calls the job on the spot says so
(:attr:`Executor.runs_inline`); the engine then skips the job, and the
machinery around it, where it can (a simple loop block body).

Every executor must pass the contract tests in ``tests/executors``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Executor"]


class Executor(abc.ABC):
    """Runs jobs somewhere. Subclasses implement the four abstract methods."""

    #: How many jobs may run at once (None: no limit the runner must respect).
    capacity: int | None = None
    #: True when jobs run in other processes and may be re-run after a loss, so a job
    #: must look up where its loop got to (see ``TaskRunSpec.checkpoint_source``).
    remote: bool = False
    #: True when :meth:`submit` runs each job at once in the caller's thread and nobody
    #: needs to see each job: the engine may then run small task runs (a simple loop
    #: block body) itself, without a job, as the job would have (LocalExecutor).
    runs_inline: bool = False

    @contextlib.contextmanager
    def start(self) -> Iterator[Executor]:
        """Set up what the executor needs for one flow run, and tear it down after."""
        yield self

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Any:
        """Start ``fn(*args)`` and return a future for it (one with ``done()``).

        An executor may hold the job back until the next :meth:`wait`, to send
        many at once (the Dask executor does): callers wait after submitting.
        """

    @abc.abstractmethod
    def wait(self, futures: Iterable[Any]) -> tuple[set[Any], set[Any]]:
        """Block until at least one future is done; return ``(done, not_done)``."""

    @abc.abstractmethod
    def result(self, future: Any) -> Any:
        """The value of a finished future (re-raising its exception)."""

    def event_relay(self, emit: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        """What jobs call to emit events; in-process executors pass ``emit`` through."""
        return emit

    def cancel(self, futures: Iterable[Any]) -> None:
        """Try to cancel futures that have not finished (best effort)."""
        for future in futures:
            with contextlib.suppress(Exception):
                future.cancel()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
