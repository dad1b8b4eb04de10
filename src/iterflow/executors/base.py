"""The executor contract: submit a job, wait for some to finish. That is all.

The flow runner decides *what* runs and in which order; an executor only
decides *where*. A job is a plain callable that runs one task run to its end —
every iteration of its loop, its retries, its timeouts — and returns the task
run's final state, so a looping task never costs a round trip per iteration.

A job is ``fn(*args, **shared)``. ``args`` are the job's own; ``shared`` holds
keyword arguments that many jobs of a run hold in common -- the very same
objects: the run's context, a mapped task's ``unmapped(...)`` inputs. An
executor whose jobs run in other processes may send each such value once
rather than with every job (and each value of a dict among them, since a
mapped child's inputs are a dict of its own around values it shares); ``fn``
receives values equal to those passed. One key has a meaning of its own:

``shared["cancel"]``
    The runner's cancel flag, an object with ``is_set()`` that is set when the
    run is cancelled; a looping job asks it before each iteration. A flag of
    the runner's process means nothing elsewhere, so an executor whose jobs
    run in other processes passes in its place one that is set, where the job
    runs, once the job is cancelled (:meth:`Executor.cancel`).

An executor also carries events from where jobs run back to the runner's sinks:
:meth:`Executor.event_relay` turns the runner's ``emit`` into something a job
can call where it runs (for in-process executors, ``emit`` itself).

An executor whose ``submit`` just calls the job on the spot says so
(:attr:`Executor.runs_inline`); the engine then skips the job, and the
machinery around it, where it can (a simple loop block body).

:meth:`Executor.start` may be entered again while the executor is started
(the runtime starts it before it records a run, so that a cluster it cannot
reach leaves no run behind, and the runner starts it again): the inner
``start()`` uses what the outer one set up and leaves it running.

Every executor must pass the contract tests in ``tests/executors``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Executor"]


class Executor(abc.ABC):
    """Runs jobs somewhere. Subclasses implement the four abstract methods."""

    #: How many jobs may run at once (None: no limit the runner must respect).
    capacity: int | None = None
    #: True when jobs run in other processes and may be re-run after a loss, so a job
    #: must look up where its loop got to (the runtime then gives jobs the run
    #: store's checkpoint source).
    remote: bool = False
    #: True when :meth:`submit` runs each job at once in the caller's thread and nobody
    #: needs to see each job: the engine may then run small task runs (a simple loop
    #: block body) itself, without a job, as the job would have (LocalExecutor).
    runs_inline: bool = False

    def start(self) -> contextlib.AbstractContextManager[Executor]:
        """Set up what the executor needs for one flow run, and tear it down after.

        This one has nothing to set up: a plain context giving the executor (a
        child run starts its parent's twice; a generator's context cost more).
        """
        return contextlib.nullcontext(self)

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               shared: Mapping[str, Any] | None = None) -> Any:
        """Start ``fn(*args, **shared)`` and return a future for it (one with ``done()``).

        ``key`` names the job (the task run's id), for the executor's own use.
        ``shared`` is described in the module docstring: values many jobs hold
        in common, which an executor may send once, and the cancel flag, which
        an executor whose jobs run elsewhere replaces. An executor may hold the
        job back until the next :meth:`wait`, to send many at once (the Dask
        executor does): callers wait after submitting.
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
