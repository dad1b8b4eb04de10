"""``context.logger``: a logger that knows which task run and iteration it is in.

Each record carries ``flow_run_id``, ``task_name``, ``map_index`` and
``loop_index`` as attributes (read when the record is made, so the loop index
is the current iteration's), goes to the ``iterflow.task`` logger like any
record, and is also emitted as a :class:`~iterflow.events.LogEvent` so
the run store keeps it with the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from iterflow.events import LogEvent, MetricEvent
from iterflow.metrics import checked_metric

__all__ = ["TaskLogger", "metric_recorder", "task_logger"]

_base = logging.getLogger("iterflow.task")
_now = time.time
_new_tuple = tuple.__new__
_new = object.__new__
#: ``TaskLogger._record`` before the first metric: not looked up yet.
_UNKNOWN: Any = object()


def metric_recorder(emit: Callable[[Any], None] | None) -> Callable[..., None] | None:
    """The store's own metric recorder when ``emit`` is a store sink's ``handle``, else None.

    A sink may offer ``record_metric(flow_run_id, task_run_id, loop_index,
    block_index, name, value, time)``: when it is the only sink (the event
    bus then hands out its bound ``handle``), a metric goes there as a few
    plain values, with no :class:`~iterflow.events.MetricEvent` made. A relay
    (threads, Dask, a loop block's) is not a bound ``handle``: its events stay
    events, and any other sink still gets them.
    """
    return getattr(getattr(emit, "__self__", None), "record_metric", None)


class TaskLogger(logging.LoggerAdapter):
    """Logs with the task run's identity attached; see the module docstring."""

    merge_extra = False
    # The store's fast path for metrics (see metric_recorder), found at the first metric:
    # a task run that logs none pays nothing for it.
    _record: Any = _UNKNOWN

    def __init__(self, ctx: dict[str, Any], emit: Callable[[Any], None] | None) -> None:
        # What LoggerAdapter.__init__ sets (merge_extra, Python 3.13's, is a class
        # attribute below), set here: one is made per task run, on a chain's hot path.
        self.logger = _base
        self.extra: Any = {}
        self._ctx = ctx
        self._emit = emit

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        ctx = self._ctx
        extra = {
            "flow_run_id": ctx.get("flow_run_id"),
            "flow_name": ctx.get("flow_name"),
            "task_name": ctx.get("task_name"),
            "task_run_id": ctx.get("task_run_id"),
            "task_run_name": ctx.get("task_run_name"),
            "map_index": ctx.get("map_index"),
            "loop_index": ctx.get("loop_index"),
        }
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs

    def metric(self, name: str, value: float) -> None:
        """Record metric ``name`` (``value`` checked) for this iteration (``iterflow.log_metric``).

        To the store directly when it is the only sink (:func:`metric_recorder`),
        otherwise as a :class:`~iterflow.events.MetricEvent`.
        """
        # A finite float is let through at once (x - x is NaN for NaN and infinities).
        if type(value) is not float or type(name) is not str or not name or value - value:
            value = checked_metric(name, value, self._ctx.get("task_name"))  # ints too
        emit = self._emit
        if emit is not None:
            get: Callable[[str], Any] = self._ctx.get
            record = self._record
            if record is _UNKNOWN:
                record = self._record = metric_recorder(emit)
                # The sink behind that recorder may offer a lane for this task run: from
                # now on its metrics go straight there, through an instance attribute
                # found before this method (one call less per metric).
                lane = getattr(getattr(record, "__self__", None), "metric_lane", None)
                if lane is not None:
                    fast = self.metric = lane(  # type: ignore[method-assign]
                        get("flow_run_id"), get("task_run_id"), get)
                    fast(name, value)
                    return
            if record is not None:
                record(get("flow_run_id"), get("task_run_id"), get("loop_index"),
                       get("block_index"), name, value, _now())
                return
            # tuple.__new__ straight away: the named tuple's own __new__ is one
            # Python call more, and a loop may log several metrics per iteration.
            emit(_new_tuple(MetricEvent, (
                get("flow_run_id"), get("task_run_id"), get("task_slug"), get("task_name"),
                get("map_index"), get("loop_index"), get("block_index"), name, value,
                _now(),
            )))

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self._emit is not None:
            ctx: dict[str, Any] = self._ctx
            run_id: Any = ctx.get("flow_run_id")  # None only outside a run (a test's context)
            text = str(msg) % args if args else str(msg)
            self._emit(
                LogEvent(
                    flow_run_id=run_id,
                    task_run_id=ctx.get("task_run_id"),
                    task_slug=ctx.get("task_slug"),
                    map_index=ctx.get("map_index"),
                    loop_index=ctx.get("loop_index"),
                    level=level,
                    message=text,
                    time=time.time(),
                )
            )
        super().log(level, msg, *args, **kwargs)


def task_logger(ctx: dict[str, Any], emit: Callable[[Any], None] | None) -> TaskLogger:
    """``TaskLogger(ctx, emit)``, made without calling the class.

    The same fields ``TaskLogger.__init__`` sets: calling a class whose ``__init__``
    is Python code goes through C and a frame of its own, and a logger is made
    per task run, on a chain's hot path.
    """
    logger = _new(TaskLogger)
    logger.logger = _base
    logger.extra = {}
    logger._ctx = ctx
    logger._emit = emit
    return logger
