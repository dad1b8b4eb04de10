"""iterflow's errors: one base, a small tree.

Every error iterflow raises on purpose derives from :class:`IterflowError`, so a
caller can catch them all with one ``except``. Messages say what was expected,
what was found, and how to fix it, naming the task and the flow.

::

    IterflowError
    ├── FlowDefinitionError        the graph is wrong (built or validated)
    │   ├── CycleError             an edge would close a cycle
    │   └── UnsupportedTaskError   a function iterflow cannot run as a task (also TypeError)
    ├── ParameterError             a missing, unknown or duplicate parameter
    ├── OptionError                an option with a value it cannot take (also ValueError)
    ├── LoopLimitError             a task looped past its ``max_loops``
    ├── InvalidTransition          the engine tried an illegal state change
    ├── ExecutorError              an executor could not start or reach its cluster
    ├── SerializationError         a result could not be serialized
    ├── StoreError                 the run store cannot be opened or written
    │   └── RunNotResumable        a run cannot be resumed (alive, finished, unknown)
    └── LoopBlockedWarning         a warning, not raised: an async task held up the run's
                                   event loop (also RuntimeWarning)

    RunCancelled (a BaseException, like KeyboardInterrupt: not an error but a stop)

``TypeError`` is raised, not an ``IterflowError``, when a task is called with
arguments its function does not accept: that is what Python itself does.
"""

from __future__ import annotations

__all__ = [
    "CycleError",
    "ExecutorError",
    "FlowDefinitionError",
    "InvalidTransition",
    "IterflowError",
    "LoopBlockedWarning",
    "LoopLimitError",
    "OptionError",
    "ParameterError",
    "RunCancelled",
    "RunNotResumable",
    "SerializationError",
    "StoreError",
    "UnsupportedTaskError",
]


class IterflowError(Exception):
    """Base of every error iterflow raises on purpose."""


class FlowDefinitionError(IterflowError):
    """The flow's graph is not valid (a bad edge, a task outside the flow, ...)."""


class CycleError(FlowDefinitionError):
    """An edge would close a cycle; ``path`` lists the tasks on the cycle."""

    def __init__(self, message: str, path: list[str] | None = None) -> None:
        super().__init__(message)
        self.path = path or []


class UnsupportedTaskError(FlowDefinitionError, TypeError):
    """A function that cannot be a task (an ``async def`` generator, say)."""


class ParameterError(IterflowError):
    """A required parameter is missing, an unknown one was given, or a name repeats."""


class OptionError(IterflowError, ValueError):
    """An option was given a value it cannot take (``flow.run(max_concurrency=0)``)."""


class LoopLimitError(IterflowError):
    """A task raised ``LOOP`` on the last iteration its ``max_loops`` allows."""


class InvalidTransition(IterflowError):
    """The engine (or a state handler) asked for a state change the model forbids.

    ``history`` holds the task run's recent states, newest last, to show how it
    got there.
    """

    def __init__(self, message: str, history: list | None = None) -> None:
        super().__init__(message)
        self.history = history or []


class ExecutorError(IterflowError):
    """An executor could not start, or could not reach its cluster."""


class SerializationError(IterflowError):
    """A value (a task, a result, a loop result) could not be serialized."""


class StoreError(IterflowError):
    """The run store cannot be opened, read or written."""


class RunNotResumable(StoreError):
    """The run asked for cannot be resumed: unknown, still alive, or finished."""


class RunCancelled(BaseException):
    """Raised in the runner's thread to cancel a run (SIGTERM, a cancel request).

    A ``BaseException`` like ``KeyboardInterrupt``, so that a task's ``except
    Exception`` does not swallow it. The run is recorded as ``Cancelled`` and
    can be resumed.
    """


class LoopBlockedWarning(IterflowError, RuntimeWarning):
    """An async task ran blocking code on the run's event loop, holding up the others.

    A warning, issued while it happens and naming the task; filter it like any
    (``-W error`` makes it an error, hence the base).
    """
