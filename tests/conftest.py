"""Shared fixtures for the whole suite.

- ``_isolated`` (autouse): every test gets its own ``ITERFLOW_HOME`` and an
  empty in-process cache, so no test sees another's runs or cached values.
- ``sink``: an :class:`InvariantSink` that checks, event by event, that every
  task run moves only along :data:`iterflow.core.state.TRANSITIONS`, that its
  ``Looped`` states count 0, 1, 2, ..., and that it ends in exactly one
  finished state — the flow's final state for that task run.
- ``run``: ``run(flow, **kwargs)`` runs a flow with no store and the sink, and
  checks the invariants before returning the flow's state.
- ``executor``: parametrised over the in-process executors.
- ``release``: an event set at teardown, for tests that abandon a hung thread.

Tests under core/, engine/, tasks/ and loops/ get a 60 s timeout each, so a
loop the engine never ends fails that test instead of stalling the suite.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import iterflow.runtime
from iterflow.core.state import TRANSITIONS, Kind, State
from iterflow.engine.runner import task_run_id
from iterflow.events import FlowRunEvent, LogEvent, MetricEvent, TaskRunEvent
from iterflow.executors import LocalExecutor, ThreadExecutor


class InvariantSink:
    """An event sink that records every event and every broken invariant.

    It never raises from :meth:`handle` (the engine would turn that into a
    failed task run and hide the problem); it collects ``violations`` instead,
    which :meth:`assert_ok` reports.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Any] = []
        # Keyed by task_run_id, which names one task run (and says which flow run).
        self.task_runs: dict[str, list[TaskRunEvent]] = defaultdict(list)
        self.looped: dict[str, int] = defaultdict(int)
        self.flow_runs: dict[str, list[FlowRunEvent]] = defaultdict(list)
        self.logs: list[LogEvent] = []
        self.metrics: list[MetricEvent] = []
        self.violations: list[str] = []

    # -- the sink protocol ----------------------------------------------------
    def handle(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)
            if isinstance(event, TaskRunEvent):
                self._task_event(event)
            elif isinstance(event, FlowRunEvent):
                self._flow_event(event)
            elif isinstance(event, LogEvent):
                self.logs.append(event)
            elif isinstance(event, MetricEvent):
                self.metrics.append(event)
            else:
                self.violations.append(f"unknown event type {type(event).__name__}")

    def flush(self) -> None:
        pass

    # -- checks as events arrive ----------------------------------------------
    def _task_event(self, event: TaskRunEvent) -> None:
        key = event.task_run_id
        history = self.task_runs[key]
        where = f"{event.task_slug}[map_index={event.map_index}]"
        previous = history[-1].state.kind if history else Kind.PENDING
        new = event.state.kind
        if new not in TRANSITIONS[previous]:
            self.violations.append(f"{where}: illegal move {previous.value} -> {new.value}")
        loops_so_far = self.looped[key]
        if new in (Kind.LOOPED, Kind.RUNNING, Kind.RETRYING):
            index = event.state.loop_index
            if index != loops_so_far or event.loop_index != loops_so_far:
                self.violations.append(
                    f"{where}: {new.value} has loop_index {index} (event {event.loop_index}) "
                    f"after {loops_so_far} Looped states"
                )
        if new is Kind.LOOPED:
            self.looped[key] += 1
        history.append(event)

    def _flow_event(self, event: FlowRunEvent) -> None:
        history = self.flow_runs[event.flow_run_id]
        previous = history[-1].state.kind if history else Kind.PENDING
        if event.state.kind not in TRANSITIONS[previous]:
            self.violations.append(
                f"flow {event.flow_name}: illegal move {previous.value} -> {event.state.kind.value}"
            )
        history.append(event)

    # -- checks once a run is over --------------------------------------------
    def task_states(self, slug: str, map_index: int | None = None) -> list[State]:
        """Every state one task run went through, in order (all runs of the flow)."""
        return [
            e.state
            for events in self.task_runs.values()
            if events[0].task_slug == slug and events[0].map_index == map_index
            for e in events
        ]

    def check(self, flow_state: State | None = None, flow: Any = None) -> list[str]:
        problems = list(self.violations)
        for key, events in self.task_runs.items():
            where = key
            finished = [e for e in events if e.state.is_finished()]
            if len(finished) != 1 or not events[-1].state.is_finished():
                names = [e.state.name for e in events]
                shown = names if len(names) <= 12 else ["...", *names[-12:]]
                problems.append(
                    f"{where}: ended in {len(finished)} finished states after {len(names)} "
                    f"states: {shown}"
                )
                continue
            final = events[-1].state
            ran = any(e.state.kind is Kind.RUNNING for e in events)
            looped = self.looped[key]
            if ran and final.loop_count != looped + 1:
                problems.append(
                    f"{where}: final {final.name} has loop_count {final.loop_count} after "
                    f"{looped} Looped states"
                )
        for run_id, events in self.flow_runs.items():
            kinds = [e.state.name for e in events][-12:]
            first = events[0].state if events else None
            if first is None or not (first.is_running() or first.is_finished()):
                # A flow state handler may end a run before it starts.
                problems.append(f"flow run {run_id}: does not start Running: {kinds}")
            finished = sum(e.state.is_finished() for e in events)
            if finished != 1 or not events[-1].state.is_finished():
                problems.append(f"flow run {run_id}: not exactly one final state: {kinds}")
        if flow_state is not None and flow is not None:
            problems.extend(self._check_final(flow_state, flow))
        return problems

    def _check_final(self, flow_state: State, flow: Any) -> list[str]:
        problems = []
        run_id = flow_state.run_id
        for task, state in flow_state.result.items():
            events = self.task_runs.get(task_run_id(run_id, task.slug, None))
            if not events:
                problems.append(f"{task.slug}: no events for its task run")
            elif events[-1].state is not state:
                problems.append(
                    f"{task.slug}: last event {events[-1].state!r} is not its final state {state!r}"
                )
            if state.is_mapped():
                for index, child in enumerate(state.map_states):
                    child_events = self.task_runs.get(task_run_id(run_id, task.slug, index))
                    if not child_events or child_events[-1].state is not child:
                        problems.append(f"{task.slug}[{index}]: last event is not its final state")
        if set(flow_state.result) != set(flow.tasks):
            problems.append("the flow state's result does not cover exactly the flow's tasks")
        return problems

    def assert_ok(self, flow_state: State | None = None, flow: Any = None) -> None:
        problems = self.check(flow_state, flow)
        shown = problems[:20]
        if len(problems) > 20:
            shown.append(f"... and {len(problems) - 20} more")
        assert not problems, "event invariants broken:\n  " + "\n  ".join(shown)


_ENGINE_SUITES = ("core", "engine", "tasks", "loops")


def pytest_collection_modifyitems(config, items):
    """A broken engine can loop forever: give engine tests a minute, not the global limit."""
    here = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(here).parts if item.path.is_relative_to(here) else ()
        if parts and parts[0] in _ENGINE_SUITES and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "iterflow-home"))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    iterflow.runtime.default_cache.clear()
    yield
    iterflow.runtime.default_cache.clear()


@pytest.fixture
def sink():
    recorder = InvariantSink()
    yield recorder
    recorder.assert_ok()


@pytest.fixture
def run(sink):
    """``run(flow, **kwargs)``: run with no store and the invariant sink, checked."""

    def run(flow, **kwargs):
        state = iterflow.runtime.run_flow(flow, store=None, sinks=[sink], **kwargs)
        sink.assert_ok(state, flow)
        return state

    return run


@pytest.fixture(params=["local", "threads"])
def executor(request):
    """Each in-process executor; results must not depend on which one runs the flow."""
    if request.param == "local":
        return LocalExecutor()
    return ThreadExecutor(max_workers=4)


@pytest.fixture
def release():
    """Set at teardown: a hung test thread waits on it so it ends with the test."""
    event = threading.Event()
    yield event
    event.set()
