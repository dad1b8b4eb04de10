"""What to do with the ticks that are due: pure functions of times and policies.

The server asks, for each schedule, which fire times fell in ``(cursor, now]``
(:func:`due_ticks`), and then:

1. **Catch-up** (:func:`plan`). ``misfire_grace`` (seconds, ``None``: no
   limit) is how late a tick may still start; of the ticks that may, the
   flow's ``catchup`` picks which do: ``"latest"`` the most recent one,
   ``"all"`` the most recent ``max_catchup`` in time order, ``"none"`` only
   one noticed on time (within :data:`ON_TIME` seconds). Every other tick is
   *missed*. In steady running one tick is due at a time and starts under
   every policy; after downtime the policies differ.
2. **Overlap** (:func:`admit`), for each tick that starts, given the runs of
   the flow in flight: ``"skip"`` records it skipped; ``"queue"`` lets one
   tick wait for the runs to end (a tick coming while one waits is skipped);
   ``"allow"`` starts it unless ``max_active_runs`` runs are in flight
   (then it is skipped).

>>> from datetime import datetime, timedelta, timezone
>>> now = datetime(2026, 1, 1, 15, 30, tzinfo=timezone.utc)
>>> due = [now - timedelta(hours=h, minutes=30) for h in (4, 3, 2, 1, 0)]
>>> [action for _, action in plan(due, now, catchup="latest")]
['missed', 'missed', 'missed', 'missed', 'launch']
>>> admit("skip", active=1)
'skip'
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Literal

from iterflow.schedules.definitions import Interval, Schedule

__all__ = ["MAX_BACKLOG", "ON_TIME", "admit", "due_ticks", "plan"]

#: Seconds late a tick may be noticed and still count as on time (``catchup="none"``).
ON_TIME = 5.0
#: At most this many of the ticks missed in one stretch are recorded one by one.
MAX_BACKLOG = 1000


def due_ticks(
    schedule: Schedule, after: datetime, now: datetime, *, limit: int = MAX_BACKLOG
) -> tuple[list[datetime], int]:
    """The fire times in ``(after, now]``, the latest ``limit`` of them, and how many more."""
    if isinstance(schedule, Interval):
        # Jump over a long downtime instead of walking every tick of it.
        earliest = now - schedule.interval * (limit + 1)
        if earliest > after:
            skipped = (earliest - after) // schedule.interval
            return _latest(schedule, earliest, now, limit, skipped)
    return _latest(schedule, after, now, limit, 0)


def _latest(
    schedule: Schedule, after: datetime, now: datetime, limit: int, dropped: int
) -> tuple[list[datetime], int]:
    kept: deque[datetime] = deque(maxlen=limit)
    count = 0
    for moment in schedule.fire_times(after, now):
        count += 1
        kept.append(moment)
    return list(kept), dropped + max(count - limit, 0)


def plan(
    due: list[datetime],
    now: datetime,
    *,
    catchup: str = "latest",
    misfire_grace: float | None = None,
    max_catchup: int = 5,
) -> list[tuple[datetime, Literal["launch", "missed"]]]:
    """Each due tick (in time order) with ``"launch"`` or ``"missed"`` (see the module doc)."""
    eligible = [
        t for t in due
        if misfire_grace is None or now - t <= timedelta(seconds=misfire_grace)
    ]
    if catchup == "all":
        chosen = eligible[-max_catchup:]
    elif catchup == "latest":
        chosen = eligible[-1:]
    else:
        chosen = [t for t in eligible[-1:] if now - t <= timedelta(seconds=ON_TIME)]
    keep = set(chosen)
    return [(t, "launch" if t in keep else "missed") for t in due]


def admit(
    overlap: str,
    active: int,
    *,
    waiting: bool = False,
    max_active_runs: int | None = None,
) -> Literal["launch", "queue", "skip"]:
    """Whether a tick that is to start does, waits, or is skipped (see the module doc)."""
    if overlap == "allow":
        if max_active_runs is not None and active >= max_active_runs:
            return "skip"
        return "launch"
    if active == 0 and not waiting:
        return "launch"
    if overlap == "queue" and not waiting:
        return "queue"
    return "skip"
