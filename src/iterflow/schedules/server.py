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
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iterflow.errors import StoreError
from iterflow.schedules.definitions import ScheduleError
from iterflow.schedules.flowserver import FlowServer, Launch, source_of, system_clock, utc
from iterflow.store.runstore import RunStore, open_store

__all__ = ["CHILD_ENV", "FlowServer", "Launch", "Server", "serve", "source_of"]

#: Set in the environment of the processes ``serve`` starts: ``serve()`` there does nothing.
CHILD_ENV = "ITERFLOW_SERVE_CHILD"
_LOG = logging.getLogger("iterflow.schedules")


@dataclass
class _Child:
    launch: Launch
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)


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
        clock: Callable[[], datetime] = system_clock,
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
            try:
                for fs in self.flows:
                    launches = fs.start()
                    started.append(fs)
                    fs.report(f"serving ({', '.join(s.name for s in fs.flow.schedules)}); "
                              f"{fs.status()}")
                    for launch in launches:
                        self._spawn(launch)
            except BaseException:
                self.drain = False  # refused or broken at start: resumes already begun stop
                self._shutdown()
                raise
            self._beat = time.monotonic()
            while not self._stop.is_set():
                try:
                    self.step()
                except StoreError as exc:
                    # A store locked or unreachable for a while: try again next pass.
                    _LOG.warning("serve: %s", exc)
                    self.flows[0].report(f"the store failed ({exc}); retrying")
                    self._stop.wait(min(self.heartbeat, 5.0))
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
        env = {**os.environ, CHILD_ENV: "1", "ITERFLOW_STORE_URL": self.store.url,
               "ITERFLOW_HOME": str(self.store.home)}
        try:
            import cloudpickle  # parameters and flows may hold what plain pickle refuses

            if fs.source is None:
                payload["flow"] = cloudpickle.dumps(fs.flow)
            data = cloudpickle.dumps(payload)
            process = subprocess.Popen(
                [sys.executable, "-m", "iterflow.schedules.child"],
                stdin=subprocess.PIPE, env=env, start_new_session=True,
            )
            assert process.stdin is not None
            with process.stdin:
                process.stdin.write(data)
        except Exception as exc:  # one run that cannot start must not stop serve
            fs.last_run = (launch.run_id, "not started")
            fs.report(f"could not start run {launch.run_id[:8]}: {type(exc).__name__}: {exc}")
            return
        self.children.append(_Child(launch, process))
        what = "resumed" if launch.resume else "launched"
        when = "" if launch.scheduled is None else (
            f" for {launch.schedule!r} at "
            f"{utc(launch.scheduled).isoformat(timespec='seconds')}")
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
                if time.monotonic() - self._beat >= self.heartbeat:
                    self._beat = time.monotonic()  # still serving: keep the leases
                    for fs in self.flows:
                        fs.beat()
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
