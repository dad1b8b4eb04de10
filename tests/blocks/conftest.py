"""Fixtures for loop blocks.

- ``executor``: every executor, results must not depend on it: ``local``
  (which runs simple bodies inline, without the machine), ``threads`` (one
  job per task run, through a machine per iteration) and ``dask`` (an
  in-process ``distributed`` cluster) when the Dask executor and
  ``distributed`` are installed.
- ``sink``: a :class:`BlockSink`. The suite-wide invariant sink keys task
  runs by ``(slug, map_index)``, which inside a block names every
  iteration's run at once; this one keys them by ``task_run_id`` and checks
  the same things per task run, plus what blocks promise: every event inside
  a block carries its iteration as ``block_index``, and every task run id
  names the block and the iteration.
- ``run``: ``run(flow, **kwargs)`` with no store and the sink, checked.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import defaultdict
from typing import Any

import pytest

import iterflow.runtime
from iterflow.core.state import TRANSITIONS, Kind, State
from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.executors import LocalExecutor, ThreadExecutor

HAVE_DASK = (
    importlib.util.find_spec("distributed") is not None
    and importlib.util.find_spec("iterflow.executors.dask") is not None
)

EXECUTORS = ["local", "threads"] + (
    [pytest.param("dask", marks=pytest.mark.dask)] if HAVE_DASK else []
)


def make_executor(name: str) -> Any:
    if name == "local":
        return LocalExecutor()
    if name == "threads":
        return ThreadExecutor(max_workers=4)
    from iterflow.executors.dask import DaskExecutor

    return DaskExecutor(n_workers=2, threads_per_worker=2, processes=False)


@pytest.fixture(params=EXECUTORS)
def executor(request) -> Any:
    return make_executor(request.param)


class BlockSink:
    """Records every event; checks task-run invariants per ``task_run_id``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Any] = []
        self.runs: dict[str, list[TaskRunEvent]] = defaultdict(list)
        self.violations: list[str] = []

    def handle(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)
            if isinstance(event, TaskRunEvent):
                self._task_event(event)
            elif not isinstance(event, (FlowRunEvent, LogEvent)):
                self.violations.append(f"unknown event {event!r}")

    def flush(self) -> None:
        pass

    def _task_event(self, event: TaskRunEvent) -> None:
        history = self.runs[event.task_run_id]
        where = event.task_run_id
        if history and history[0].task_slug != event.task_slug:
            self.violations.append(f"{where}: used by two tasks")
        previous = history[-1].state.kind if history else Kind.PENDING
        if event.state.kind not in TRANSITIONS[previous]:
            self.violations.append(f"{where}: illegal move {previous.value} -> {event.state.name}")
        # A resumed task run starts at the iteration it continues at.
        looped = (history[0].loop_index if history else event.loop_index) + sum(
            1 for e in history if e.state.kind is Kind.LOOPED
        )
        if event.state.kind in (Kind.RUNNING, Kind.LOOPED, Kind.RETRYING) and (
            event.state.loop_index != looped or event.loop_index != looped
        ):
            self.violations.append(
                f"{where}: {event.state.name} at loop_index {event.state.loop_index} after "
                f"{looped} Looped states"
            )
        parts = event.task_run_id.split("/")
        if event.block_index is None:
            if len(parts) - (event.map_index is not None) != 2:
                self.violations.append(f"{where}: top-level task run with a nested id")
        elif str(event.block_index) not in parts[1:-1]:
            self.violations.append(f"{where}: id does not name iteration {event.block_index}")
        history.append(event)

    # -- reading ----------------------------------------------------------------------
    def task_events(self, slug: str) -> list[TaskRunEvent]:
        return [e for e in self.events if isinstance(e, TaskRunEvent) and e.task_slug == slug]

    def states(self, slug: str) -> list[str]:
        """The state names a task went through, every run of it, in order."""
        return [
            f"{e.state.name}({e.state.loop_index})"
            if e.state.kind in (Kind.LOOPED, Kind.RETRYING)
            else e.state.name
            for e in self.task_events(slug)
        ]

    def finals(self, slug: str) -> list[TaskRunEvent]:
        """The final event of each run of task ``slug``, in the order they ended."""
        return [e for e in self.task_events(slug) if e.state.is_finished()]

    def check(self) -> list[str]:
        problems = list(self.violations)
        for run_id, events in self.runs.items():
            kinds = [e.state.name for e in events]
            finished = sum(e.state.is_finished() for e in events)
            if finished != 1 or not events[-1].state.is_finished():
                problems.append(f"{run_id}: not exactly one final state, last: {kinds}")
                continue
            final = events[-1].state
            looped = events[0].loop_index + sum(1 for e in events if e.state.kind is Kind.LOOPED)
            if any(e.state.kind is Kind.RUNNING for e in events) and final.loop_count != looped + 1:
                problems.append(f"{run_id}: loop_count {final.loop_count} after {looped} Looped")
        return problems

    def assert_ok(self) -> None:
        problems = self.check()
        assert not problems, "event invariants broken:\n  " + "\n  ".join(problems)


@pytest.fixture
def sink():
    recorder = BlockSink()
    yield recorder
    recorder.assert_ok()


@pytest.fixture
def run(sink):
    """``run(flow, **kwargs)``: no store, the block sink; checks the flow's result covers it."""

    def run(flow, **kwargs) -> State:
        state = iterflow.runtime.run_flow(flow, store=None, sinks=[sink], **kwargs)
        sink.assert_ok()
        assert set(state.result) == set(flow.tasks), "the result must cover every task"
        assert all(s.is_finished() for s in state.result.values())
        return state

    return run
