"""Schedules: run flows on cron and interval schedules with ``iterflow serve``.

>>> from datetime import timedelta
>>> from iterflow import Flow
>>> from iterflow.schedules import Cron, Interval
>>> with Flow("sync-orders", schedules=[
...     Cron("0 * * * *", tz="Europe/Paris", parameters={}),
...     Interval(timedelta(days=1), anchor="2026-01-01T03:00Z"),
... ], catchup="latest", overlap="skip", on_crash="resume") as flow:
...     pass

then ``iterflow serve flows.py`` (or ``flow.serve()``) runs it on those
schedules. Modules: :mod:`~iterflow.schedules.definitions` (what a schedule
is, next fire times), :mod:`~iterflow.schedules.options` (a flow's
scheduling options), :mod:`~iterflow.schedules.planning` (what to do with
the ticks that are due: pure), :mod:`~iterflow.schedules.flowserver` (one
flow's lease, cursors and decisions), :mod:`~iterflow.schedules.server` (the
serving loop, child processes, signals) and :mod:`~iterflow.schedules.child`
(one run in its own process). See ``docs/schedules.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iterflow.schedules.definitions import (
        Cron,
        Interval,
        Schedule,
        ScheduleError,
        ScheduleParameterError,
    )

__all__ = ["Cron", "Interval", "Schedule", "ScheduleError", "ScheduleParameterError", "serve"]

# Loaded on first use: every Flow() imports iterflow.schedules.options, which must
# not pay for zoneinfo and cron parsing when the flow has no schedule.
_LAZY = frozenset({"Cron", "Interval", "Schedule", "ScheduleError", "ScheduleParameterError"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'iterflow.schedules' has no attribute {name!r}")
    value = getattr(importlib.import_module("iterflow.schedules.definitions"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def serve(*flows: Any, **options: Any) -> None:
    """Serve ``flows`` on their schedules until stopped.

    See :func:`iterflow.schedules.server.serve` for the options.
    """
    from iterflow.schedules.server import serve as _serve  # the server needs the store

    _serve(*flows, **options)
