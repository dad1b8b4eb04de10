"""iterflow's errors: one base, a small tree.

Every error iterflow raises on purpose derives from :class:`IterflowError`, so a
caller can catch them all with one ``except``. Each is *also* the builtin it
stands for (attrs does the same: ``NotAnAttrsClassError`` is a ``ValueError``),
so code that caught the builtin keeps working: a bad value is a ``ValueError``,
a wrong kind of argument a ``TypeError``, a run that cannot go on a
``RuntimeError``. Messages say what was expected, what was found, and how to
fix it, naming the task and the flow. Beside each name, the builtin it also is
(a child is also whatever its parent is):

::

    IterflowError
    ├── FlowDefinitionError  ValueError    the graph is wrong (built or validated)
    │   ├── CycleError                     an edge would close a cycle
    │   ├── OutsideFlowError RuntimeError  a task or block used with no flow to join
    │   ├── TaskRunNameError OptionError   a ``task_run_name`` naming an input the task
    │   │                                  does not have, or not a valid format string
    │   └── ScheduleError    OptionError   a bad schedule or scheduling option (a bad cron
    │       │                              string, an unknown time zone)
    │       └── ScheduleParameterError     a schedule's parameters do not suit its flow
    │                        ParameterError
    ├── ArgumentError        TypeError     a call a task cannot take; a non-task for a task
    │   └── UnsupportedTaskError           a function that cannot be a task (an async
    │                                      generator)
    ├── OptionError          ValueError    a task or flow option with a value it cannot take
    ├── ParameterError       ValueError    a missing, unknown, duplicate or unnamed parameter
    │   └── SubflowParameterError  TypeError  a flow called as a task with inputs it lacks
    ├── MapError             ValueError    a mapped argument that cannot be mapped over
    ├── MetricError          ValueError    a metric value that is not a finite number
    ├── LoopLimitError       RuntimeError  a task looped past its ``max_loops``
    ├── InvalidTransition    RuntimeError  the engine tried an illegal state change
    ├── ExecutorError        RuntimeError  an executor could not start or reach its cluster
    ├── SubflowFailed        RuntimeError  a child flow run (a subflow) did not succeed
    ├── SerializationError   TypeError     a result could not be serialized
    ├── StoreError           RuntimeError  the run store cannot be opened or written
    │   ├── RunNotResumable                a run cannot be resumed (alive, finished, unknown)
    │   ├── RunTakenOver                   another process resumed the run this one drove
    │   └── ServeConflict                  another live ``iterflow serve`` serves the flow
    └── LoopBlockedWarning   RuntimeWarning  a warning, never raised by iterflow: an async
                                           task held up the run's event loop

    RunCancelled (a BaseException, like KeyboardInterrupt: not an error but a stop)

The builtins were chosen for what a caller would have caught from plain Python
or from Prefect Core, which iterflow users port from: an invalid flow, a bad
option or parameter is a ``ValueError`` there; pickle and json refuse a value
with a ``TypeError``; a limit reached while running is a ``RuntimeError``
(``RecursionError`` is one). ``NotImplementedError`` from an un-overridden
``Task.run`` stays what Python uses for that.

>>> from iterflow import Task
>>> from iterflow.errors import IterflowError, OptionError
>>> try:
...     Task(max_retries=-1)
... except ValueError as exc:   # also an OptionError, and so an IterflowError
...     isinstance(exc, OptionError), isinstance(exc, IterflowError)
(True, True)
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CycleError",
    "ExecutorError",
    "FlowDefinitionError",
    "InvalidTransition",
    "IterflowError",
    "LoopBlockedWarning",
    "LoopLimitError",
    "MapError",
    "MetricError",
    "OptionError",
    "OutsideFlowError",
    "ParameterError",
    "RunCancelled",
    "RunNotResumable",
    "RunTakenOver",
    "ScheduleError",
    "ScheduleParameterError",
    "SerializationError",
    "ServeConflict",
    "StoreError",
    "SubflowFailed",
    "SubflowParameterError",
    "TaskRunNameError",
    "UnsupportedTaskError",
]


class IterflowError(Exception):
    """Base of every error iterflow raises on purpose."""


class FlowDefinitionError(IterflowError, ValueError):
    """The flow's graph is not valid (a bad edge, a task outside the flow, ...)."""


class CycleError(FlowDefinitionError):
    """An edge would close a cycle; ``path`` lists the tasks on the cycle."""

    def __init__(self, message: str, path: list[str] | None = None) -> None:
        super().__init__(message)
        self.path = path or []


class OutsideFlowError(FlowDefinitionError, RuntimeError):
    """A task was called, or a block opened, with no flow to add it to.

    Use it inside ``with Flow(...):`` or pass ``flow=``.
    """


class ArgumentError(IterflowError, TypeError):
    """A call a task's function cannot accept, or a value where a task belongs.

    A ``TypeError``, as Python raises for a call with the wrong arguments.
    """


class UnsupportedTaskError(ArgumentError):
    """A function that cannot be a task: an ``async def`` that yields (an async generator)."""


class OptionError(IterflowError, ValueError):
    """An option of a task or a flow has a value it cannot take."""


class ParameterError(IterflowError, ValueError):
    """A required parameter is missing, an unknown one was given, or a name repeats."""


class SubflowParameterError(ParameterError, ArgumentError):
    """A flow called inside another with unknown or missing parameters.

    Both a ``ValueError`` (like any parameter error) and a ``TypeError`` (like
    any call a task cannot take); the message names both flows.
    """


class SubflowFailed(IterflowError, RuntimeError):
    """A child flow run did not succeed; fails the task that ran it.

    ``run_id`` names the child run (``iterflow show RUN`` shows why); the
    message carries the child's own message.
    """

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.run_id))
class ScheduleError(FlowDefinitionError, OptionError):
    """A schedule or a flow's scheduling option is not valid (a bad cron string, say).

    A ``ValueError`` too, so ``except ValueError`` around ``Cron(text)`` works.
    """


class ScheduleParameterError(ScheduleError, ParameterError):
    """A schedule's parameters do not suit its flow (unknown, or a required one missing)."""


class TaskRunNameError(FlowDefinitionError, OptionError):
    """A ``task_run_name`` format string that does not suit its task's inputs."""


class MapError(IterflowError, ValueError):
    """A mapped argument cannot be mapped over (not iterable, or lengths differ)."""


class MetricError(IterflowError, ValueError):
    """``log_metric`` got a value that is not a finite number, or a bad name."""


class LoopLimitError(IterflowError, RuntimeError):
    """A task raised ``LOOP`` on the last iteration its ``max_loops`` allows."""


class InvalidTransition(IterflowError, RuntimeError):
    """The engine (or a state handler) asked for a state change the model forbids.

    ``history`` holds the task run's recent states, newest last, to show how it
    got there.
    """

    def __init__(self, message: str, history: list | None = None) -> None:
        super().__init__(message)
        self.history = history or []


class ExecutorError(IterflowError, RuntimeError):
    """An executor could not start, or could not reach its cluster."""


class SerializationError(IterflowError, TypeError):
    """A value (a task, a result, a loop result) could not be serialized."""


class StoreError(IterflowError, RuntimeError):
    """The run store cannot be opened, read or written."""


class RunNotResumable(StoreError):
    """The run asked for cannot be resumed: unknown, still alive, or finished."""


class RunTakenOver(StoreError):
    """Another process claimed (resumed) the run this process was driving.

    This process stops driving it at once and records nothing more for it,
    so the new owner's record is never overwritten.
    """


class ServeConflict(StoreError):
    """Another live ``iterflow serve`` holds the lease of this flow in this store."""


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
