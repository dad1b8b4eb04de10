"""How values look on the dashboard: times, durations, states (Jinja filters)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["FILTERS", "duration", "level_name", "params", "state_class", "when"]

_STATE_CLASSES = {
    "Success": "ok", "Cached": "ok", "Mapped": "ok", "Looped": "loop",
    "Running": "run", "Pending": "wait", "Retrying": "retry", "Skipped": "skip",
    "Failed": "bad", "TriggerFailed": "bad", "TimedOut": "bad", "Crashed": "bad",
    "Cancelled": "cancel",
}


def state_class(state: str | None) -> str:
    """The CSS class (one colour per family) for a state name."""
    return "s-" + _STATE_CLASSES.get(state or "", "wait")


def when(epoch: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` (UTC); empty for ``None``."""
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def duration(seconds: float | None) -> str:
    """``850 µs``, ``12 ms``, ``3.4 s``, ``5 m 02 s``, ``2 h 05 m``; empty for ``None``."""
    if seconds is None:
        return ""
    if seconds < 0:
        seconds = 0.0
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} m"


def span(start: float | None, end: float | None) -> str:
    """The duration between two epoch times (up to now while ``end`` is ``None``)."""
    if start is None:
        return ""
    return duration((end if end is not None else time.time()) - start)


def level_name(level: int) -> str:
    """``INFO`` for 20, and so on."""
    return logging.getLevelName(level)


def params(value: Any) -> str:
    """Parameters as compact JSON text (escaped by the template like any text)."""
    if value is None:
        return ""
    try:
        return json.dumps(value, sort_keys=True, default=repr)[:2000]
    except (TypeError, ValueError):
        return repr(value)[:2000]


def number(value: float | int | None) -> str:
    """``12,345``; empty for ``None``."""
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


FILTERS = {
    "state_class": state_class,
    "when": when,
    "duration": duration,
    "level_name": level_name,
    "params": params,
    "number": number,
}
GLOBALS = {"span": span}
