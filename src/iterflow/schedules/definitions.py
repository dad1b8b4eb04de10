"""What a schedule is: when a flow should run, and with which parameters.

Two kinds, both frozen descriptions with no clock of their own:

* :class:`Cron` — a cron expression (5 fields, or 6 with seconds first) read
  in a time zone (``tz``, a ``zoneinfo`` name; UTC when left out).
* :class:`Interval` — every ``timedelta`` of elapsed time, counted from an
  ``anchor`` instant (the Unix epoch when left out, so an hourly interval
  fires on the hour UTC and two processes always agree on the fire times).

``next_after(t)`` is the whole contract: the first fire time strictly after
the aware datetime ``t``, as an aware UTC datetime. The server asks it again
and again; nothing here keeps state.

Daylight saving time (``Cron`` only; an ``Interval`` counts real seconds and
never notices DST). Cron expressions are evaluated by ``cronsim``, which
follows Debian cron: a job at a fixed local time that falls in the hour skipped
on a spring-forward day runs at the first valid moment after the gap (02:30 ->
03:00), and on a fall-back day it runs once, at the first of the two 02:30s; a
job with a wildcard hour (``0 * * * *``) runs in every real hour, so twice in
the repeated one and not at all in the skipped one.

Why cronsim: it is small (one module, no dependencies), typed, maintained
(it drives Healthchecks.io's cron checks), and its DST rules are written down
and tested against Debian cron. croniter's own maintainer announced its end of
life in 2024, and it brings python-dateutil along.

>>> from datetime import datetime, timedelta, timezone
>>> Cron("0 * * * *").next_after(datetime(2026, 1, 1, 10, 15, tzinfo=timezone.utc))
datetime.datetime(2026, 1, 1, 11, 0, tzinfo=datetime.timezone.utc)
>>> Interval(timedelta(minutes=10)).next_after(datetime(2026, 1, 1, 10, 15, tzinfo=timezone.utc))
datetime.datetime(2026, 1, 1, 10, 20, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iterflow.errors import ScheduleError, ScheduleParameterError

__all__ = ["Cron", "Interval", "Schedule", "ScheduleError", "ScheduleParameterError"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Schedule:
    """The base of :class:`Cron` and :class:`Interval`.

    ``name`` identifies the schedule in the store (each occurrence is recorded
    under the flow's name, the schedule's name and its time), so it must stay
    the same from one ``iterflow serve`` to the next; by default it is made
    from the definition (``"cron 0 * * * * Europe/Paris"``, ``"every 1h"``).
    """

    name: str
    parameters: dict[str, Any]

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (aware), as an aware UTC datetime."""
        raise NotImplementedError

    def next(self, n: int = 1, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times after ``after`` (default: now), as aware UTC datetimes.

        >>> [t.hour for t in Cron("0 */6 * * *").next(2, after=datetime(2026, 1, 1, 1))]
        [6, 12]
        """
        moment = datetime.now(UTC) if after is None else after
        times = []
        for _ in range(n):
            moment = self.next_after(moment)
            times.append(moment)
        return times

    def fire_times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire time in ``(after, until]``, in order."""
        until = _aware(until, "fire_times")
        moment = self.next_after(after)
        while moment <= until:
            yield moment
            moment = self.next_after(moment)

    def _describe(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """The definition as JSON-ready data (parameters shown as text where not JSON)."""
        raise NotImplementedError

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Schedule:
        """The schedule :meth:`as_dict` described."""
        parameters, name = data.get("parameters"), data.get("name")
        if data.get("kind") == "cron":
            return Cron(data["expr"], data.get("tz"), parameters, name=name)
        return Interval(
            timedelta(seconds=data["seconds"]), data.get("anchor"), parameters, name=name
        )

    def _init_common(self, parameters: Mapping[str, Any] | None, name: str | None) -> None:
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ScheduleError(
                f"{self._describe()}: parameters must be a dict of parameter values, got "
                f"{type(parameters).__name__} {parameters!r}"
            )
        self.parameters = dict(parameters or {})
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ScheduleError(
                f"{self._describe()}: name must be a non-empty string, got {name!r}"
            )
        self.name = name if name is not None else self._describe()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def __repr__(self) -> str:
        extra = f", parameters={self.parameters!r}" if self.parameters else ""
        return f"<{type(self).__name__} {self.name!r}{extra}>"


def _aware(moment: datetime, what: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{what} needs a datetime, got {type(moment).__name__} {moment!r}")
    # A naive time is taken as UTC: the store and the server work in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Cron(Schedule):
    """Fire at the times a cron expression names, read in the time zone ``tz``.

    ``expr`` has 5 fields (minute hour day-of-month month day-of-week) or 6
    (seconds first); names (``MON``, ``JAN``), ranges, steps, ``L`` and
    ``#`` work as in cronsim. ``tz`` is a zoneinfo name (``"Europe/Paris"``);
    ``None`` means UTC. ``parameters`` are given to every run it starts.
    A bad expression or an unknown zone raises :class:`ScheduleError` at once.

    >>> Cron("30 2 * * MON-FRI", tz="Europe/Paris", parameters={"full": False})
    <Cron 'cron 30 2 * * MON-FRI Europe/Paris', parameters={'full': False}>
    """

    def __init__(
        self,
        expr: str,
        tz: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        from cronsim import CronSim, CronSimError

        if not isinstance(expr, str) or not expr.strip():
            raise ScheduleError(
                f"Cron needs a cron expression such as '0 * * * *', got {expr!r}"
            )
        self.expr = " ".join(expr.split())
        self.tz = tz
        self._zone: tzinfo = _zone(tz, f"Cron({self.expr!r})")
        try:
            CronSim(self.expr, datetime(2026, 1, 1, tzinfo=self._zone))
        except CronSimError as exc:
            raise ScheduleError(
                f"Cron({expr!r}) is not a valid cron expression ({exc}). Use 5 fields "
                f"(minute hour day-of-month month day-of-week), e.g. '0 * * * *' for every "
                f"hour, or 6 with seconds first."
            ) from None
        self._init_common(parameters, name)

    def _describe(self) -> str:
        return f"cron {self.expr}" + (f" {self.tz}" if self.tz else "")

    def as_dict(self) -> dict[str, Any]:
        """``{"kind": "cron", "name", "expr", "tz", "parameters"}``."""
        return {"kind": "cron", "name": self.name, "expr": self.expr, "tz": self.tz,
                "parameters": _jsonable(self.parameters)}

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``, as an aware UTC datetime."""
        from cronsim import CronSim

        start = _aware(moment, "Cron.next_after").astimezone(UTC)
        local = start.astimezone(self._zone)
        # cronsim works to the second and forgets which of two repeated local
        # times it started from (fall-back day): skip anything not after `start`.
        for found in CronSim(self.expr, local.replace(microsecond=0)):
            fire = found.astimezone(UTC)
            if fire > start:
                return fire
        raise ScheduleError(f"{self._describe()} never fires after {start.isoformat()}")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_zone"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._zone = _zone(self.tz, self._describe())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and self.__getstate__() == other.__getstate__()

    __hash__ = Schedule.__hash__


class Interval(Schedule):
    """Fire every ``interval`` of elapsed time, on the grid ``anchor + k * interval``.

    ``interval`` is a ``timedelta`` (or a number of seconds) greater than zero.
    ``anchor`` is a datetime or an ISO 8601 string (``"2026-01-01T03:00Z"``;
    a time without a zone is UTC); ``None`` anchors at the Unix epoch, so
    the grid does not depend on when ``serve`` started. Fire times may lie
    before the anchor: it only places the grid.

    >>> from datetime import timedelta
    >>> Interval(timedelta(days=1), anchor="2026-01-01T03:00Z", parameters={"full": True})
    <Interval 'every 1d from 2026-01-01T03:00:00+00:00', parameters={'full': True}>
    """

    def __init__(
        self,
        interval: timedelta | float,
        anchor: datetime | str | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, timedelta | int | float):
            raise ScheduleError(
                f"Interval needs a timedelta (or seconds), got {type(interval).__name__} "
                f"{interval!r}"
            )
        if not isinstance(interval, timedelta):
            if not math.isfinite(interval):
                raise ScheduleError(f"Interval needs a finite number of seconds, got {interval!r}")
            interval = timedelta(seconds=interval)
        if interval <= timedelta(0):
            raise ScheduleError(f"Interval needs a positive timedelta, got {interval!r}")
        self.interval = interval
        self.anchor = _anchor(anchor, interval)
        self._init_common(parameters, name)

    def _describe(self) -> str:
        text = f"every {_span(self.interval)}"
        if self.anchor != _EPOCH:
            text += f" from {self.anchor.isoformat()}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """``{"kind": "interval", "name", "seconds", "anchor", "parameters"}``."""
        return {"kind": "interval", "name": self.name,
                "seconds": self.interval.total_seconds(), "anchor": self.anchor.isoformat(),
                "parameters": _jsonable(self.parameters)}

    def next_after(self, moment: datetime) -> datetime:
        """The first grid time strictly after ``moment``, as an aware UTC datetime."""
        start = _aware(moment, "Interval.next_after").astimezone(UTC)
        # Whole microseconds throughout: exact, so every process finds the same times.
        step = self.interval // timedelta(microseconds=1)
        since = (start - self.anchor) // timedelta(microseconds=1)
        k = since // step + 1
        return self.anchor + timedelta(microseconds=k * step)


def _span(interval: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1h30m"``; fractions of a second as ``0.5s``."""
    seconds = interval.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        whole = int(seconds // size)
        if whole:
            parts.append(f"{whole}{unit}")
            seconds -= whole * size
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[key] = value
    return out


def _zone(tz: str | None, what: str) -> tzinfo:
    if tz is None:
        return UTC
    if not isinstance(tz, str) or not tz:
        raise ScheduleError(
            f"{what}: tz must be a time zone name such as 'Europe/Paris', got {tz!r}"
        )
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"{what}: unknown time zone {tz!r} ({exc}). Use an IANA name such as "
            f"'Europe/Paris' or 'America/New_York', or leave tz out for UTC."
        ) from None


def _anchor(anchor: datetime | str | None, interval: timedelta) -> datetime:
    if anchor is None:
        return _EPOCH
    if isinstance(anchor, str):
        try:
            parsed = datetime.fromisoformat(anchor)
        except ValueError:
            raise ScheduleError(
                f"Interval({interval!r}): anchor {anchor!r} is not an ISO 8601 time; use "
                f"e.g. '2026-01-01T03:00Z' or a datetime"
            ) from None
        return _aware(parsed, "anchor").astimezone(UTC)
    if isinstance(anchor, datetime):
        return _aware(anchor, "anchor").astimezone(UTC)
    raise ScheduleError(
        f"Interval({interval!r}): anchor must be a datetime or an ISO 8601 string, got "
        f"{type(anchor).__name__} {anchor!r}"
    )
