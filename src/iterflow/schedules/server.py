"""``iterflow serve``: run flows on their schedules, one child process per run.

Shape. One :class:`Server` drives one :class:`FlowServer` per flow. A
FlowServer holds the flow's lease in the store, a cursor per schedule (the
last fire time it dealt with) and at most one waiting tick; each pass it
turns the ticks that fell due into store rows and launches
(:mod:`~iterflow.schedules.planning` decides, :mod:`iterflow.store.serving`
records). The Server owns the child processes, the loop and the signals.

Start. Taking the lease fails with :class:`~iterflow.store.ServeConflict`
(naming the pid and host) while another live ``serve`` holds it; a dead or
stopped holder is taken over. Each cursor starts at the schedule's last
recorded tick, or when the previous ``serve`` of the flow last beat its
heartbeat if that is later, or now for a flow never served: the ticks in
between fell while nobody served and go through the catch-up policy. Runs a
previous ``serve`` launched that are dead now are handled as crashes (below);
live ones count as in flight.

Runs. Each launch starts ``python -m iterflow.schedules.child`` in a new
session (Ctrl-C on the terminal reaches ``serve`` alone, which decides what
the runs get). The run id is chosen here and written in the tick row before
the child starts, so every run can be traced to its tick and no tick starts
two runs. The child loads the flow from its file (or, for a flow that lives
in no file, from a cloudpickle of it), runs it with the flow's executor, the
schedule's parameters and the store, and records its trigger.

Crashes. A child that dies leaving its run ``Crashed`` (kill -9, OOM) is
resumed at its last recorded iteration when ``on_crash="resume"``, once per
run (the tick row counts resumes, so a restart of ``serve`` does not resume
it again); a run that crashes again, or with ``on_crash="leave"``, stays
``Crashed``, is reported, and the flow's ``on_failure`` hooks are called with
a ``Failed`` state saying so.

Stop. SIGTERM or Ctrl-C: no more launches; runs in flight get SIGTERM and
end ``Cancelled`` (resumable), or with ``drain=True`` are waited for (a second
signal cancels them after all). Then the leases are released.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iterflow.schedules.definitions import ScheduleError
from iterflow.schedules.options import check_parameters
from iterflow.schedules.planning import admit, due_ticks, plan
from iterflow.store import serving
from iterflow.store.runstore import RunStore, open_store

__all__ = ["CHILD_ENV", "FlowServer", "Launch", "Server", "serve", "source_of"]

#: Set in the environment of the processes ``serve`` starts: ``serve()`` there does nothing.
CHILD_ENV = "ITERFLOW_SERVE_CHILD"
_LOG = logging.getLogger("iterflow.schedules")


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _system_clock() -> datetime:
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


@dataclass
class _Child:
    launch: Launch
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)


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
        clock: Callable[[], datetime] = _system_clock,
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
            self.cursors[schedule.name] = min(_utc(max(known)), now) if known else now
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
                when = _utc(row["scheduled"]).isoformat(timespec="seconds")
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


class Server:
    """Serves flows until stopped: leases, ticks, child processes, crashes, signals.

    ``targets`` are ``(flow, source)`` pairs (``source``: ``/abs/file.py:var``
    or None). ``drain``: on stop, wait for runs in flight instead of
    cancelling them. ``poll``: seconds between passes at most.
    """

    def __init__(
        self,
        targets: Iterable[tuple[Any, str | None]],
        store: RunStore,
        *,
        drain: bool = False,
        clock: Callable[[], datetime] = _system_clock,
        report: Callable[[str], None] | None = None,
        poll: float = 0.25,
        heartbeat: float = 5.0,
        stale_after: float = 15.0,
        cancel_timeout: float = 30.0,
    ) -> None:
        self.store, self.drain, self.poll = store, drain, poll
        self.heartbeat, self.cancel_timeout = heartbeat, cancel_timeout
        self.owner = uuid.uuid4().hex
        out = report or (lambda line: print(line, flush=True))
        self.flows = [
            FlowServer(flow, source, store, owner=self.owner, clock=clock, report=out,
                       stale_after=stale_after)
            for flow, source in targets
        ]
        names = [f.name for f in self.flows]
        if len(set(names)) != len(names):
            raise ScheduleError(f"serve got the same flow name twice: {sorted(names)}")
        self.children: list[_Child] = []
        self._stop = threading.Event()
        self._signals = 0
        self._beat = 0.0

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM / Ctrl-C in the main thread)."""
        previous = self._install_signals()
        started: list[FlowServer] = []
        try:
            for fs in self.flows:
                launches = fs.start()
                started.append(fs)
                fs.report(f"serving ({', '.join(s.name for s in fs.flow.schedules)}); "
                          f"{fs.status()}")
                for launch in launches:
                    self._spawn(launch)
            self._beat = time.monotonic()
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self._sleep_time())
            self._shutdown()
        finally:
            for fs in started:
                try:
                    fs.release()
                except Exception:  # the store is gone: the lease goes stale on its own
                    _LOG.exception("could not release the lease of flow %r", fs.name)
            self._restore_signals(previous)

    def step(self) -> None:
        """One pass: reap children, beat the leases, launch what is due."""
        self._reap()
        if time.monotonic() - self._beat >= self.heartbeat:
            self._beat = time.monotonic()
            for fs in self.flows:
                fs.beat()
                self._check_watched(fs)
        for fs in self.flows:
            if fs.lost or self._stop.is_set():
                continue
            for launch in fs.due(self._active(fs)):
                self._spawn(launch)

    def stop(self, drain: bool | None = None) -> None:
        """Ask the loop to stop (from any thread); ``drain`` overrides the server's."""
        if drain is not None:
            self.drain = drain
        self._stop.set()

    def _sleep_time(self) -> float:
        upcoming = [t for t in (fs.next_fire() for fs in self.flows if not fs.lost) if t]
        if not upcoming:
            return self.poll
        wait = (min(upcoming) - self.flows[0].clock()).total_seconds()
        return min(max(wait, 0.01), self.poll)

    def _active(self, fs: FlowServer) -> int:
        mine = sum(1 for c in self.children if c.launch.flow is fs)
        return mine + len(fs.watched)

    def _check_watched(self, fs: FlowServer) -> None:
        for run_id in sorted(fs.watched):
            state = fs._state(run_id)
            if state in ("Running", "Pending"):
                continue
            fs.watched.discard(run_id)
            if state == "Crashed":
                for launch in fs.crashed(run_id):
                    self._spawn(launch)
            elif state is not None:
                fs.last_run = (run_id, state)

    # -- children ---------------------------------------------------------------------
    def _spawn(self, launch: Launch) -> None:
        fs = launch.flow
        payload: dict[str, Any] = {
            "source": fs.source, "run_id": launch.run_id, "resume": launch.resume,
            "parameters": launch.parameters,
            "trigger": None if launch.resume else {
                "kind": "schedule", "schedule": launch.schedule, "scheduled": launch.scheduled,
            },
        }
        if fs.source is None:
            import cloudpickle

            payload["flow"] = cloudpickle.dumps(fs.flow)
        env = {**os.environ, CHILD_ENV: "1", "ITERFLOW_STORE_URL": self.store.url,
               "ITERFLOW_HOME": str(self.store.home)}
        process = subprocess.Popen(
            [sys.executable, "-m", "iterflow.schedules.child"],
            stdin=subprocess.PIPE, env=env, start_new_session=True,
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(pickle.dumps(payload))
        self.children.append(_Child(launch, process))
        what = "resumed" if launch.resume else "launched"
        when = "" if launch.scheduled is None else (
            f" for {launch.schedule!r} at "
            f"{_utc(launch.scheduled).isoformat(timespec='seconds')}")
        fs.last_run = (launch.run_id, "Running")
        fs.report(f"{what} run {launch.run_id[:8]}{when} (pid {process.pid}); {fs.status()}")

    def _reap(self) -> None:
        for child in list(self.children):
            code = child.process.poll()
            if code is None:
                continue
            self.children.remove(child)
            fs, run_id = child.launch.flow, child.launch.run_id
            state = fs._state(run_id)
            if state is None:
                fs.last_run = (run_id, "not started")
                fs.report(f"run {run_id[:8]} did not start (its process exited with {code}); "
                          f"{fs.status()}")
            elif state == "Crashed" or (state in ("Running", "Pending") and code != 0):
                if self._stop.is_set():
                    fs.report(f"run {run_id[:8]} crashed while serve was stopping")
                    continue
                for launch in fs.crashed(run_id):
                    self._spawn(launch)
            else:
                fs.last_run = (run_id, state)
                took = time.time() - child.started
                fs.report(f"run {run_id[:8]} {state} after {took:.1f} s; {fs.status()}")

    def _shutdown(self) -> None:
        if self.children and self.drain:
            self.flows[0].report(f"draining: waiting for {len(self.children)} run(s)")
            while self.children and self.drain:
                self._reap()
                time.sleep(0.1)
        if self.children:
            for child in self.children:
                child.launch.flow.report(f"cancelling run {child.launch.run_id[:8]} (resumable)")
                try:
                    child.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + self.cancel_timeout
            while self.children and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.05)
            for child in self.children:
                child.process.kill()
                child.process.wait()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, frame: Any) -> None:
            self._signals += 1
            # A second signal while draining cancels the runs after all.
            self.stop(drain=False if self._signals > 1 else None)

        return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    *flows: Any,
    store: RunStore | str | None = None,
    drain: bool = False,
    sources: Iterable[str | None] | None = None,
    **options: Any,
) -> None:
    """Serve ``flows`` on their schedules until SIGTERM or Ctrl-C.

    ``store``: a :class:`RunStore` or URL (default: ``ITERFLOW_STORE_URL`` or
    the SQLite file under ``ITERFLOW_HOME``). ``drain``: on stop, wait for
    runs in flight rather than cancel them. ``sources``: where each flow is
    defined (``/abs/file.py:var``), found by looking when left out. Other
    options go to :class:`Server`. Inside a run ``serve`` started it does
    nothing, so a flow file that calls ``flow.serve()`` at import is safe.

    >>> serve(flow, drain=True)   # doctest: +SKIP
    """
    if os.environ.get(CHILD_ENV):
        return
    found = list(sources) if sources is not None else [source_of(f) for f in flows]
    opened = store if isinstance(store, RunStore) else open_store(store)
    try:
        Server(list(zip(flows, found)), opened, drain=drain, **options).run()
    finally:
        if opened is not store:
            opened.close()
