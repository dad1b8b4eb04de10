"""The Running that follows each Looped is only made for those who need it.

Sinks that set ``implied_running`` (the run store, the progress display) do not
get it; any other sink, and every state handler, sees every transition.
"""

from __future__ import annotations

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.events import EventBus, TaskRunEvent
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runtime import run_flow


class Recorder:
    """Keeps the kinds of one task's states, with or without implied Running events."""

    def __init__(self, implied_running: bool) -> None:
        self.implied_running = implied_running
        self.kinds: list[tuple[str, int]] = []

    def handle(self, event) -> None:
        if isinstance(event, TaskRunEvent) and event.task_slug == "count":
            self.kinds.append((event.state.kind.value, event.loop_index))


@task
def count(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return n


def build(handler=None) -> Flow:
    with Flow("implied") as flow:
        if handler is None:
            count(3)
        else:
            count.copy(state_handlers=[handler])(3)
    return flow


EVERY = [("Running", 0), ("Looped", 0), ("Running", 1), ("Looped", 1),
         ("Running", 2), ("Looped", 2), ("Running", 3), ("Success", 3)]
LEAN = [("Running", 0), ("Looped", 0), ("Looped", 1), ("Looped", 2), ("Success", 3)]


def test_the_bus_is_lean_only_when_every_sink_says_so():
    assert not EventBus([]).implied_running
    assert EventBus([Recorder(True), Recorder(True)]).implied_running
    assert not EventBus([Recorder(True), Recorder(False)]).implied_running
    assert not EventBus([object()]).implied_running  # a sink that says nothing gets all


@pytest.mark.parametrize("executor", [LocalExecutor, ThreadExecutor], ids=["local", "threads"])
def test_sinks_that_imply_running_get_half_the_loop_events(executor):
    lean = Recorder(True)
    state = run_flow(build(), executor=executor(), store=None, sinks=[lean])
    assert state.is_successful()
    assert lean.kinds == LEAN


def test_one_sink_that_needs_running_gets_every_event_for_all():
    lean, every = Recorder(True), Recorder(False)
    run_flow(build(), store=None, sinks=[lean, every])
    assert every.kinds == EVERY
    assert lean.kinds == EVERY  # the bus does not filter; the sink's handle() may


def test_state_handlers_see_every_transition_even_when_sinks_are_lean():
    seen = []

    def handler(task, old, new):
        seen.append((new.kind.value, new.loop_index if new.is_looped() else None))

    lean = Recorder(True)
    run_flow(build(handler), store=None, sinks=[lean])
    assert [kind for kind, _ in seen] == [kind for kind, _ in EVERY]
    assert lean.kinds == EVERY


def test_the_store_records_the_same_history_either_way(tmp_path):
    from iterflow.store import iterations, task_runs

    url = f"sqlite:///{tmp_path / 'store.db'}"
    lean_run = run_flow(build(), store=url)
    every_run = run_flow(build(), store=url, sinks=[Recorder(False)])

    def history(run_id):
        rows = iterations(run_id, "count", store=url)
        return [(h.state, h.loop_index, h.preview) for h in rows]

    assert history(lean_run.run_id) == history(every_run.run_id) == [
        ("Looped", 0, "0"), ("Looped", 1, "1"), ("Looped", 2, "2"), ("Success", 3, "3"),
    ]
    (lean_task,) = task_runs(lean_run.run_id, store=url)
    assert (lean_task.state, lean_task.loop_count) == ("Success", 4)
