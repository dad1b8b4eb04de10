"""A flow's scheduling options, checked where the flow is defined.

``Flow(name, schedules=[...], catchup=..., overlap=..., on_crash=...,
on_failure=[...], misfire_grace=..., max_catchup=..., max_active_runs=...)``
hands its keyword arguments to :func:`check_options`, so a typo fails at the
line that wrote it, naming the flow. :func:`check_parameters` runs when the
flow's ``with`` block ends (and again before serving): by then its
parameters are known, and a schedule that would start a run that cannot
start (a required parameter with no value, an unknown one) is refused.

>>> check_options("f", catchup="all", max_catchup=3)["max_catchup"]
3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from iterflow.errors import ScheduleError, ScheduleParameterError

if TYPE_CHECKING:
    from iterflow.schedules.definitions import Schedule

__all__ = ["CATCHUP", "ON_CRASH", "OVERLAP", "check_options", "check_parameters"]

CATCHUP = ("latest", "none", "all")
OVERLAP = ("skip", "queue", "allow")
ON_CRASH = ("resume", "leave")


def _choice(flow: str, option: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        shown = " | ".join(repr(a) for a in allowed)
        raise ScheduleError(f"flow {flow!r}: {option}={value!r} is not one of {shown}")
    return str(value)


def _seconds(flow: str, option: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScheduleError(
            f"flow {flow!r}: {option} must be seconds or a timedelta (or None), got {value!r}"
        )
    if value < 0:
        raise ScheduleError(f"flow {flow!r}: {option} cannot be negative, got {value!r}")
    return float(value)


def _count(flow: str, option: str, value: Any, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScheduleError(
            f"flow {flow!r}: {option} must be a whole number of at least 1, got {value!r}"
        )
    return value


def check_options(
    flow: str,
    *,
    schedules: Iterable[Schedule] | None = None,
    catchup: str = "latest",
    overlap: str = "skip",
    on_crash: str = "resume",
    on_failure: Iterable[Callable[..., Any]] | Callable[..., Any] | None = None,
    misfire_grace: float | timedelta | None = None,
    max_catchup: int = 5,
    max_active_runs: int | None = None,
) -> dict[str, Any]:
    """The options, checked and normalised (times in seconds), as a dict of attributes."""
    found: list[Any] = []
    if schedules is not None:
        # Every Flow() comes here; only one given schedules loads what a schedule is
        # (zoneinfo and cron parsing), see benchmarks/startup.py.
        from iterflow.schedules.definitions import Schedule

        found = [schedules] if isinstance(schedules, Schedule) else list(schedules or ())
    for schedule in found:
        if not isinstance(schedule, Schedule):
            raise ScheduleError(
                f"flow {flow!r}: schedules takes Cron(...) and Interval(...) objects from "
                f"iterflow.schedules, got {type(schedule).__name__} {schedule!r}"
            )
    names = [s.name for s in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScheduleError(
            f"flow {flow!r} has more than one schedule named {twice[0]!r}; each occurrence is "
            f"recorded under its schedule's name, so give them distinct names (name=...)"
        )
    if callable(on_failure):
        on_failure = [on_failure]
    hooks = list(on_failure or ())
    for hook in hooks:
        if not callable(hook):
            raise ScheduleError(
                f"flow {flow!r}: on_failure takes callables hook(flow, state), got "
                f"{type(hook).__name__} {hook!r}"
            )
    return {
        "schedules": found,
        "catchup": _choice(flow, "catchup", catchup, CATCHUP),
        "overlap": _choice(flow, "overlap", overlap, OVERLAP),
        "on_crash": _choice(flow, "on_crash", on_crash, ON_CRASH),
        "on_failure": hooks,
        "misfire_grace": _seconds(flow, "misfire_grace", misfire_grace),
        "max_catchup": _count(flow, "max_catchup", max_catchup, optional=False),
        "max_active_runs": _count(flow, "max_active_runs", max_active_runs, optional=True),
    }


def check_parameters(flow: Any) -> None:
    """Refuse schedules whose runs could not start: unknown or missing parameters.

    Raises :class:`ScheduleParameterError` naming the flow, the schedule and
    the parameters, and saying how to fix it.
    """
    declared = {p.name: p for p in flow.parameters()}
    for schedule in flow.schedules:
        unknown = sorted(set(schedule.parameters) - set(declared))
        if unknown:
            valid = ", ".join(sorted(declared)) or "none"
            raise ScheduleParameterError(
                f"flow {flow.name!r}, schedule {schedule.name!r}: unknown parameter(s) "
                f"{', '.join(unknown)}; the flow's parameters are: {valid}"
            )
        missing = sorted(
            n for n, p in declared.items() if p.required and n not in schedule.parameters
        )
        if missing:
            raise ScheduleParameterError(
                f"flow {flow.name!r}, schedule {schedule.name!r}: the flow needs parameter(s) "
                f"{', '.join(missing)}, which have no default and which the schedule does not "
                f"give. Give them in the schedule (parameters={{{missing[0]!r}: ...}}) or give "
                f"the Parameter a default."
            )
