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
