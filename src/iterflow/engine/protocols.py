"""What the engine asks of the objects it is given: executors, checkpoint sources, cancel flags.

The engine imports no executor and no store; it names what it calls on them
here, as :class:`typing.Protocol` classes, so a type checker can hold both
sides to it. :class:`iterflow.executors.Executor` is the base every executor
derives from; :class:`Executor` below is the part of it the engine uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["CancelFlag", "CheckpointSource", "Executor"]


class CancelFlag(Protocol):
    """Set by the runner to stop in-process loops before their next iteration
    (a :class:`threading.Event`)."""

    def is_set(self) -> bool: ...


class CheckpointSource(Protocol):
    """Where a re-scheduled job finds the last recorded iteration of its task run."""

    def last_loop(self, task_run_id: str) -> tuple[int, Any] | None:
        """``(next_loop_index, loop_result)`` recorded for ``task_run_id``, or None."""


class Executor(Protocol):
    """Runs jobs somewhere; see :mod:`iterflow.executors.base` for the contract."""

    #: Jobs run in other processes (and may be re-run after a loss).
    remote: bool
    #: ``submit`` runs each job at once on the caller's thread, and nothing needs to
    #: see each job: the engine may run small task runs itself, without a job.
    runs_inline: bool

    def start(self) -> AbstractContextManager[Any]: ...

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: str | None = None,
        shared: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def wait(self, futures: Iterable[Any]) -> tuple[set[Any], set[Any]]: ...

    def result(self, future: Any) -> Any: ...

    def cancel(self, futures: Iterable[Any]) -> None: ...

    def event_relay(
        self, emit: Callable[[Any], None] | None
    ) -> Callable[[Any], None] | None: ...
