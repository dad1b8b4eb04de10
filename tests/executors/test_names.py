"""Task run names and iteration labels on every executor (Dask included).

Tasks are module-level so Dask workers import them by reference. Names and
labels are made where the task runs (a worker) and travel on its events.
"""

from __future__ import annotations

import iterflow
from iterflow import Flow, loop, task
from iterflow.runtime import run_flow
from iterflow.signals import LOOP
from iterflow.store import iterations, open_store


@task(task_run_name="fetch {url}")
def fetch(url, pages=3):
    i = iterflow.context.loop_index
    assert iterflow.context.task_run_name == f"fetch {url}"
    iterflow.set_iteration_label(f"{url} page {i}")
    if i < pages:
        if i == 1:
            raise LOOP(result=i, label=f"{url} page one")  # LOOP's label wins
        raise LOOP(result=i)
    return i


@task(task_run_name=lambda item, **_: f"item #{item}")
def handle(item):
    return item * 2


@task
def body(total, i):
    iterflow.context.set_iteration_label("inside the body")
    return total + i


@task
def enough(total):
    return total >= 6


@task
def describe(total):
    return f"total={total}"


def _flow() -> Flow:
    with Flow("names on executors") as flow:
        fetch("a")
        fetch.map(url=["m0", "m1"])
        handle.map([5, 6])
        with loop(initial=0, max_loops=20, name="grow") as it:
            total = body(it.result, it.index)
            it.next(result=total, until=enough(total), label=describe(total))
    return flow


def _check_events(sink) -> None:
    events = [e for e in sink.events if type(e).__name__ == "TaskRunEvent"]
    fetch_a = [e for e in events if e.task_slug == "fetch" and e.map_index is None]
    assert {e.task_run_name for e in fetch_a} == {"fetch a"}
    labels = [(e.state.name, e.loop_index, e.label) for e in fetch_a if e.label is not None]
    assert labels == [("Looped", 0, "a page 0"), ("Looped", 1, "a page one"),
                      ("Looped", 2, "a page 2"), ("Success", 3, "a page 3")]
    # Only the state that ends an iteration carries its label.
    assert all(e.label is None for e in fetch_a if e.state.name == "Running")
    children = {e.map_index: e.task_run_name for e in events
                if e.task_slug == "fetch-2" and e.map_index is not None}
    assert children == {0: "fetch m0", 1: "fetch m1"}
    items = {e.map_index: e.task_run_name for e in events
             if e.task_slug == "handle" and e.map_index is not None}
    assert items == {0: "item #5", 1: "item #6"}
    block = [(e.loop_index, e.label) for e in events if e.task_slug == "grow" and e.label]
    assert block == [(0, "total=0"), (1, "total=1"), (2, "total=3"), (3, "total=6")]


def test_names_and_labels_reach_the_sinks(executor, sink):
    # No store: names and labels reach the event sinks only. (The sink's per-task
    # check is left out: it does not know loop blocks' body task runs.)
    state = run_flow(_flow(), executor=executor, store=None, sinks=[sink])
    sink.assert_ok(state)
    assert state.is_successful()
    _check_events(sink)


def test_names_and_labels_are_recorded(executor, tmp_path, sink):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    flow = _flow()
    state = run_flow(flow, executor=executor, store=url, sinks=[sink])
    sink.assert_ok(state)
    assert state.is_successful()
    _check_events(sink)
    with open_store(url, home=tmp_path) as store:
        names = {(t.task_slug, t.map_index): t.task_run_name
                 for t in store.task_runs(state.run_id) if t.block_index is None}
        assert names[("fetch", None)] == "fetch a"
        assert names[("fetch-2", 0)] == "fetch m0"
        assert names[("handle", 1)] == "item #6"
        assert names[("grow", None)] is None  # a block has no task_run_name
        history = iterations(state.run_id, "fetch", store=store)
        assert [(r.state, r.label) for r in history] == [
            ("Looped", "a page 0"), ("Looped", "a page one"), ("Looped", "a page 2"),
            ("Success", "a page 3"),
        ]
        grow = iterations(state.run_id, "grow", store=store)
        assert [r.label for r in grow] == ["total=0", "total=1", "total=3", "total=6"]
        # A body task's own (single) iteration keeps the label it set.
        inside = iterations(state.run_id, "body", store=store)
        assert inside and {r.label for r in inside} == {"inside the body"}
