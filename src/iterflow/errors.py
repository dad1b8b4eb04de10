"""iterflow's errors: one base, a small tree.

Every error iterflow raises on purpose derives from :class:`IterflowError`, so a
caller can catch them all with one ``except``. Messages say what was expected,
what was found, and how to fix it, naming the task and the flow.

::

    IterflowError
    ├── FlowDefinitionError        the graph is wrong (built or validated)
    │   └── CycleError             an edge would close a cycle
    ├── ParameterError             a missing, unknown or duplicate parameter
    ├── LoopLimitError             a task looped past its ``max_loops``
    ├── InvalidTransition          the engine tried an illegal state change
    ├── ExecutorError              an executor could not start or reach its cluster
    ├── SerializationError         a result could not be serialized
    └── StoreError                 the run store cannot be opened or written
        ├── RunNotResumable        a run cannot be resumed (alive, finished, unknown)
        └── RunTakenOver           another process resumed the run this one drove

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
    "LoopLimitError",
    "ParameterError",
    "RunCancelled",
    "RunNotResumable",
    "RunTakenOver",
    "SerializationError",
    "StoreError",
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


class ParameterError(IterflowError):
    """A required parameter is missing, an unknown one was given, or a name repeats."""


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


class RunTakenOver(StoreError):
    """Another process claimed (resumed) the run this process was driving.

    This process stops driving it at once and records nothing more for it,
    so the new owner's record is never overwritten.
    """


class RunCancelled(BaseException):
    """Raised in the runner's thread to cancel a run (SIGTERM, a cancel request).

    A ``BaseException`` like ``KeyboardInterrupt``, so that a task's ``except
    Exception`` does not swallow it. The run is recorded as ``Cancelled`` and
    can be resumed.
    """
