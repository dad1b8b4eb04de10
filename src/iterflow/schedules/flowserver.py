"""One flow served from one store: the decisions of ``iterflow serve``, without processes.

A :class:`FlowServer` holds the flow's lease, a cursor per schedule (the
last fire time it dealt with), at most one waiting tick, and the crash
policy. :meth:`FlowServer.due` turns the ticks that fell due since the last
pass into store rows and :class:`Launch` records (the planning itself is
:mod:`~iterflow.schedules.planning`); it starts nothing, so tests drive it
pass by pass with a clock of their own. :class:`~iterflow.schedules.server.Server`
starts the processes. See that module for the whole story.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iterflow.schedules.definitions import ScheduleError
from iterflow.schedules.options import check_parameters
from iterflow.schedules.planning import admit, due_ticks, plan
from iterflow.store import serving
from iterflow.store.runstore import RunStore

__all__ = ["FlowServer", "Launch", "source_of", "system_clock", "utc"]


def utc(seconds: float) -> datetime:
    """Epoch seconds (as the store keeps times) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def system_clock() -> datetime:
    """The default clock: now, aware, in UTC."""
    return datetime.now(UTC)


@dataclass
class Launch:
    """A run to start: a scheduled tick, or a resume of ``run_id``."""

    flow: FlowServer
    run_id: str
    schedule: str | None
    scheduled: float | None
    parameters: dict[str, Any]
    resume: bool = False


class FlowServer:
    """One flow served from one store: its lease, cursors, waiting tick and crash policy.

    ``clock`` returns the current aware datetime (tests pass their own);
    ``report`` receives status lines.
    """

    def __init__(
        self,
        flow: Any,
        source: str | None,
        store: RunStore,
        *,
        owner: str,
        clock: Callable[[], datetime] = system_clock,
        report: Callable[[str], None] = print,
        stale_after: float = 15.0,
    ) -> None:
        if not flow.schedules:
            raise ScheduleError(
                f"flow {flow.name!r} has no schedules to serve; give it some: "
                f"Flow({flow.name!r}, schedules=[Cron('0 * * * *')])"
            )
        check_parameters(flow)
        self.flow, self.source, self.store = flow, source, store
        self.name: str = flow.name
        self.owner, self.clock, self._report = owner, clock, report
        self.stale_after = stale_after
        self.cursors: dict[str, datetime] = {}
        self.checked: datetime | None = None  # every tick up to here has been dealt with
        self.waiting: Launch | None = None
        self.watched: set[str] = set()  # live runs an earlier serve launched
        self.last_run: tuple[str, str] | None = None  # run id, state: for the status line
        self.lost = False

    def report(self, message: str) -> None:
        """Print ``message`` with the time and the flow's name."""
        stamp = datetime.now().strftime("%H:%M:%S")
        self._report(f"{stamp} {self.name}: {message}")

    # -- start ------------------------------------------------------------------------
    def start(self) -> list[Launch]:
        """Take the lease, place the cursors, and pick up what earlier serves left."""
        now = self.clock()
        previous = serving.acquire_lease(
            self.store, self.name, self.owner, stale_after=self.stale_after,
            schedules=[s.as_dict() for s in self.flow.schedules], covered=now.timestamp(),
        )
        if previous is not None and previous.stopped is None and previous.owner != self.owner:
            self.report(f"took over from the serve that was process {previous.pid} on "
                        f"{previous.host}")
        last = serving.last_ticks(self.store, self.name)
        covered = None if previous is None else previous.covered
        for schedule in self.flow.schedules:
            known = [t for t in (last.get(schedule.name), covered) if t is not None]
            self.cursors[schedule.name] = min(utc(max(known)), now) if known else now
        self.checked = min(self.cursors.values())
        waiting = serving.ticks(self.name, outcome="queued", store=self.store)
        for tick in waiting[:-1]:
            serving.update_tick(self.store, self.name, tick.schedule, tick.scheduled,
                                outcome="skipped", message="another tick was waiting")
        if waiting:
            tick = waiting[-1]
            self.waiting = Launch(self, "", tick.schedule, tick.scheduled,
                                  self._parameters(tick.schedule))
        launches: list[Launch] = []
        for tick in serving.serve_runs(self.store, self.name):
            assert tick.run_id is not None
            state = self._state(tick.run_id)
            if state == "Crashed":
                launches += self.crashed(tick.run_id)
            elif state in ("Running", "Pending"):
                self.watched.add(tick.run_id)
        return launches

    def beat(self) -> bool:
        """Renew the lease (with how far ticks were dealt with); False once it was lost."""
        if not self.lost and not serving.renew_lease(
            self.store, self.name, self.owner, covered=self._covered()
        ):
            self.lost = True
            self.report("another serve took this flow over; no longer serving it")
        return not self.lost

    def release(self) -> None:
        """Let go of the lease, saying how far ticks were dealt with."""
        serving.release_lease(self.store, self.name, self.owner, covered=self._covered())

    def _covered(self) -> float | None:
        return None if self.checked is None else self.checked.timestamp()

    def _parameters(self, schedule_name: str) -> dict[str, Any]:
        for schedule in self.flow.schedules:
            if schedule.name == schedule_name:
                return dict(schedule.parameters)
        return {}

    def _state(self, run_id: str) -> str | None:
        from iterflow.errors import StoreError

        try:
            return self.store.get_run(run_id).state
        except StoreError:
            return None  # the child died before it recorded the run

    # -- a pass -----------------------------------------------------------------------
    def due(self, active: int) -> list[Launch]:
        """Record the ticks that fell due since the last pass; the runs to start now.

        ``active``: the flow's runs in flight (for the overlap policy).
        """
        now = self.clock()
        rows: list[dict[str, Any]] = []
        pending: list[tuple[int, Launch, str]] = []  # row index, launch, "launch"/"queue"
        flow = self.flow
        for schedule in flow.schedules:
            times, dropped = due_ticks(schedule, self.cursors[schedule.name], now)
            if not times:
                continue
            self.cursors[schedule.name] = times[-1]
            decisions = plan(times, now, catchup=flow.catchup, misfire_grace=flow.misfire_grace,
                             max_catchup=flow.max_catchup)
            for i, (moment, action) in enumerate(decisions):
                row = {"flow_name": self.name, "schedule": schedule.name,
                       "scheduled": moment.timestamp(), "outcome": "missed", "message": None}
                if i == 0 and dropped:
                    row["message"] = f"{dropped} earlier occurrences were missed too"
                if action == "launch":
                    verdict = admit(flow.overlap, active + sum(p[2] == "launch" for p in pending),
                                    waiting=self.waiting is not None
                                    or any(p[2] == "queue" for p in pending),
                                    max_active_runs=flow.max_active_runs)
                    launch = Launch(self, uuid.uuid4().hex, schedule.name, row["scheduled"],
                                    dict(schedule.parameters))
                    if verdict == "launch":
                        row.update(outcome="launched", run_id=launch.run_id)
                        pending.append((len(rows), launch, "launch"))
                    elif verdict == "queue":
                        row.update(outcome="queued")
                        pending.append((len(rows), launch, "queue"))
                    else:
                        row.update(outcome="skipped", message=self._skip_reason(active))
                rows.append(row)
        claimed = serving.claim_ticks(self.store, rows)
        self.checked = now
        for row, fresh in zip(rows, claimed):
            if fresh and row["outcome"] in ("missed", "skipped"):
                when = utc(row["scheduled"]).isoformat(timespec="seconds")
                self.report(f"{row['outcome']} {row['schedule']!r} at {when}")
        launches = []
        for index, launch, kind in pending:
            if not claimed[index]:
                continue  # recorded before, by an earlier or another serve: not ours to act on
            if kind == "queue":
                self.waiting = launch
            else:
                launches.append(launch)
        if self.waiting is not None and active == 0 and not launches:
            launch, self.waiting = self.waiting, None
            launch.run_id = uuid.uuid4().hex
            assert launch.schedule is not None and launch.scheduled is not None
            serving.update_tick(self.store, self.name, launch.schedule, launch.scheduled,
                                outcome="launched", run_id=launch.run_id)
            launches.append(launch)
        return launches

    def _skip_reason(self, active: int) -> str:
        if self.flow.overlap == "allow":
            return f"max_active_runs={self.flow.max_active_runs} runs were in flight"
        if self.flow.overlap == "queue":
            return "a run was in flight and another tick was already waiting"
        return f"{active} run(s) of the flow were in flight (overlap='skip')"

    def crashed(self, run_id: str) -> list[Launch]:
        """A run of this flow died: resume it once (``on_crash="resume"``), else report it."""
        tick = serving.tick_of_run(self.store, run_id)
        resumes = tick.resumes if tick is not None else 1
        if self.flow.on_crash == "resume" and resumes == 0 and tick is not None:
            serving.update_tick(self.store, self.name, tick.schedule, tick.scheduled,
                                resumes=1)
            self.report(f"run {run_id[:8]} crashed; resuming it at its last iteration")
            return [Launch(self, run_id, tick.schedule, tick.scheduled, {}, resume=True)]
        why = "crashed again after a resume" if resumes else "crashed (on_crash='leave')"
        self.report(f"run {run_id[:8]} {why}; it stays Crashed (`iterflow resume "
                    f"{run_id[:8]}` continues it)")
        self.last_run = (run_id, "Crashed")
        from iterflow.runtime import _call_failure_hooks
        from iterflow.states import Failed

        state = Failed(f"run {run_id} of flow {self.name!r} {why} and was left Crashed")
        state.run_id = run_id
        _call_failure_hooks(self.flow, state)
        return []

    def next_fire(self) -> datetime | None:
        """The next time one of the flow's schedules fires."""
        times = [s.next_after(self.cursors[s.name]) for s in self.flow.schedules
                 if s.name in self.cursors]
        return min(times) if times else None

    def status(self) -> str:
        """``next <time>; last run <id> <state>``: the flow's status line."""
        upcoming = self.next_fire()
        text = "next " + (upcoming.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                          if upcoming else "never")
        if self.last_run is not None:
            text += f"; last run {self.last_run[0][:8]} {self.last_run[1]}"
        return text


def source_of(flow: Any) -> str | None:
    """``/abs/file.py:variable`` for a flow held by a module-level variable, else None."""
    modules = [sys.modules.get("__main__"), *list(sys.modules.values())]
    for module in modules:
        path = getattr(module, "__file__", None)
        if not path or not str(path).endswith(".py"):
            continue
        for name, value in list(vars(module).items()):
            if value is flow and not name.startswith("_"):
                return f"{Path(path).resolve()}:{name}"
    return None
