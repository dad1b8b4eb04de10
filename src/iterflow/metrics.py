"""``iterflow.log_metric``: numbers a task records per iteration (a loss, a page size).

Each call records ``(name, value)`` against the current task run and its
iteration (``loop_index``; inside a loop block also ``block_index``), with
the time. The engine emits it as a :class:`~iterflow.events.MetricEvent`
through the same relay as log lines, so the run store batches it like every
other record and metrics logged on worker threads or Dask workers arrive in
order. When the run store is the run's only sink, the task's logger hands
it the metric as plain values instead (no event is made: a loop may log
several per iteration). Read them back with ``iterflow.store.metrics(run)``
or ``iterflow show RUN --metrics``.

>>> import iterflow
>>> from iterflow import LOOP, Flow, task
>>> @task
... def train():
...     iterflow.log_metric("loss", 1.0 / (1 + iterflow.context.loop_index))
...     if iterflow.context.loop_index < 2:
...         raise LOOP()
>>> with Flow("training") as flow:
...     _ = train()
>>> flow.run(store=None).is_successful()
True
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from iterflow.context import _current
from iterflow.errors import MetricError

__all__ = ["check_metric", "checked_metric", "log_metric"]

#: Ints below this in size convert to a float without overflowing.
INT_LIMIT = 2**1023


def check_metric(name: Any, value: Any, task_name: str | None = None) -> float:
    """``value`` as a float, or :class:`~iterflow.errors.MetricError` saying what is wrong."""
    where = f" in task {task_name!r}" if task_name else ""
    if not isinstance(name, str) or not name:
        raise MetricError(
            f"log_metric{where} needs a metric name that is a non-empty string, "
            f"got {name!r}."
        )
    if isinstance(value, bool) or not isinstance(value, Real):
        raise MetricError(
            f"Metric {name!r}{where} must be a number (int or float), got "
            f"{type(value).__name__} {value!r}; log a number, e.g. float(x)."
        )
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise MetricError(
            f"Metric {name!r}{where} must be a finite number, got {number!r}; "
            f"check for NaN or infinity before logging it."
        )
    return number


def log_metric(name: str, value: float) -> None:
    """Record ``value`` as metric ``name`` for the current task run and iteration.

    Several names may be logged per iteration; logging a name twice in one
    iteration keeps both. Outside a task run the value is checked and dropped.

    >>> import iterflow
    >>> iterflow.log_metric("loss", 0.25)   # outside a run: checked only
    """
    # The task run's logger checks the value (``TaskLogger.metric``, or the store's
    # lane that takes its place): a loop may log several per iteration, and the lane
    # checks a name it has seen before and a finite float or plain int in two tests.
    logger = _current.get().get("logger")
    if logger is None:
        check_metric(name, value)
    else:
        logger.metric(name, value)


def checked_metric(name: Any, value: Any, task_name: str | None = None) -> float:
    """``value`` as a float, checked as :func:`check_metric` does, the common cases first.

    ``x - x`` is 0 for every finite float or int, NaN for NaN and the infinities.
    """
    kind = type(value)
    if kind is float and type(name) is str and name and value - value == 0:
        return value
    if kind is int and type(name) is str and name and -INT_LIMIT < value < INT_LIMIT:
        return float(value)
    return check_metric(name, value, task_name)
