"""Which task runs the engine may simply call: no machine, no job, nothing around the call.

A run of a plain ``@task`` function (or of a subflow task, whose ``run`` starts
its child run) with no state handler, ``timeout``, ``log_stdout`` or
``task_run_name`` needs only its function called and its states recorded:
:func:`~iterflow.engine.expand.run_plain` does that for a chain's links and a
map's children (:func:`plain_call`, per task run), and a loop block's inline
body (:mod:`iterflow.engine.inline`) asks once per task (:func:`plain_function`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iterflow.core.subflow import SubflowTask
from iterflow.core.task import FunctionTask

__all__ = ["PLAIN_RUN", "plain_call", "plain_function"]

#: FunctionTask.run, which a subclass may replace (then its own run is called).
PLAIN_RUN = FunctionTask.run
#: Task classes whose own run() run_plain may call as it is: a subflow task (a map of
#: children, a child per block iteration), whose run is the child run.
_RUN_CALLED = frozenset({SubflowTask})


def plain_call(task: Any) -> Callable[..., Any] | None:
    """What ``run_plain`` calls for a run of ``task``, or None: a task it does not run.

    A plain ``@task`` function, or a subflow task (its ``run`` starts the
    child run), with no state handler, ``timeout``, ``log_stdout`` or
    ``task_run_name``.
    """
    cls = type(task)
    if cls.run is PLAIN_RUN:
        call = task.fn
    elif cls in _RUN_CALLED:  # a subflow: its run() starts the child run
        call = task.run
    else:
        return None
    if (
        "run" in task.__dict__  # task.copy(run=...)
        or task.state_handlers
        or task.timeout is not None
        or task.log_stdout
        or task.task_run_name is not None
    ):
        return None
    return call


def plain_function(task: Any) -> Callable[..., Any] | None:
    """The function a run of ``task`` only calls, where nothing else is to be done; else None.

    What ``run_plain`` checks per task run (:func:`plain_call`), asked once for a
    task that runs many times (a loop block's body task, see
    :mod:`iterflow.engine.inline`), for a plain ``@task`` function only (not a
    subflow), not async, and not ``checkpoint="every"`` (whose states are
    committed one by one, never through a lane).
    """
    if type(task).run is not PLAIN_RUN or task.is_async or task.checkpoint == "every":
        return None
    return plain_call(task)
