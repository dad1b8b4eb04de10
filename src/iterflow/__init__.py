"""iterflow: a Python workflow engine in which loops are first-class.

>>> import iterflow
>>> from iterflow import task, Flow, LOOP
>>> @task
... def accumulate(x, iterations):
...     result = x + iterflow.context.get("loop_result", 0)
...     if iterflow.context.loop_index < iterations:
...         raise LOOP(result=result)
...     return result
>>> with Flow("looping accumulator") as flow:
...     y = accumulate(x=1, iterations=5)
>>> flow.run(store=None).result[y].result
6
"""

from iterflow.context import context
from iterflow.core.block import loop
from iterflow.core.flow import Flow
from iterflow.core.parameter import Parameter
from iterflow.core.task import Task, flatten, task, unmapped
from iterflow.durable import sleep
from iterflow.metrics import log_metric
from iterflow.naming import set_iteration_label
from iterflow.signals import FAIL, LOOP, RETRY, SKIP, SUCCESS
from iterflow.tasks.control_flow import case, ifelse, merge, switch

__version__ = "0.1.0"

# Subpackages reachable as ``iterflow.store`` etc. after a plain ``import iterflow``,
# each imported on first use: the store alone would load SQLAlchemy (~0.2 s).
_SUBPACKAGES = frozenset({
    "errors", "events", "executors", "schedules", "states", "store", "tasks", "triggers",
})


def __getattr__(name: str) -> object:
    """``iterflow.store``, ``iterflow.executors``, ...: imported when first used.

    >>> import iterflow
    >>> iterflow.executors.ThreadExecutor(max_workers=2)
    ThreadExecutor(max_workers=2)
    """
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"iterflow.{name}")
    raise AttributeError(f"module 'iterflow' has no attribute {name!r}")

__all__ = [
    "FAIL",
    "LOOP",
    "RETRY",
    "SKIP",
    "SUCCESS",
    "Flow",
    "Parameter",
    "Task",
    "__version__",
    "case",
    "context",
    "flatten",
    "ifelse",
    "log_metric",
    "loop",
    "merge",
    "set_iteration_label",
    "sleep",
    "switch",
    "task",
    "unmapped",
]
