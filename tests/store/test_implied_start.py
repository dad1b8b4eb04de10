"""A short task run's start is its ``task_runs.started``, not a ``Running`` row.

A task run that starts and ends within one of the writer's batches (a map's
child, a loop block's body, a chain's link) gets no ``Running`` row: its
``started`` says when it began. Where the ``Running`` row carries something —
a task run still open when its batch ends, a restart after ``Retrying``, a
resumed run's start, a ``Running`` with a message — it stays; and the
dashboard times a loop's first iteration from ``started`` when it has no
``Running`` row.
"""

from __future__ import annotations

import sqlalchemy as sa

from iterflow.states import Looped, Retrying, Running, Success
from iterflow.store import iteration_detail, iteration_page, iteration_summary

from .helpers import RunEvents


def history(store, task_run_id: str) -> list[tuple[str, float]]:
    """(kind, time) of a task run's state rows, in order."""
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT s.kind, s.time FROM state_transitions s "
            "JOIN task_runs t ON t.id = s.task_run WHERE t.task_run_id = :t ORDER BY s.id"
        ), {"t": task_run_id})]


def task_run(store, task_run_id: str):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT id, state, started, ended FROM task_runs WHERE task_run_id = :t"
        ), {"t": task_run_id}).one()


def test_a_task_run_within_one_batch_has_no_running_row_but_keeps_its_start(store, sink):
    run = RunEvents(sink)
    run.start()
    started, ended = Running(), Success(result=1)
    ended.timestamp = started.timestamp + 2.5  # apart, so that the wrong one would show
    run.task("child", started, map_index=0)
    run.task("child", ended, map_index=0)
    run.finish()
    sink.flush()
    tid = run.task_run_id("child", 0)
    assert [kind for kind, _ in history(store, tid)] == ["Success"]
    row = task_run(store, tid)
    assert (row.state, row.started, row.ended) == ("Success", started.timestamp, ended.timestamp)
    (info,) = store.task_runs(run.run_id)
    assert info.started == started.timestamp and info.ended == ended.timestamp


def test_a_task_run_open_across_batches_keeps_its_running_row(sqlite_url):
    from iterflow.store import open_store

    with open_store(sqlite_url) as store:
        sink = store.sink(batch_size=2)  # batch boundaries every two records
        run = RunEvents(sink)
        run.start()
        start = Running()
        run.task("slow", start)
        sink.flush()  # the batch ends with the task run still open
        run.task("slow", Success(result=1))
        run.finish()
        sink.close()
        tid = run.task_run_id("slow")
        assert [k for k, _ in history(store, tid)] == ["Running", "Success"]
        assert history(store, tid)[0][1] == start.timestamp
        assert task_run(store, tid).started == start.timestamp


def test_restarts_resumes_and_messages_keep_their_running_rows(store, sink):
    run = RunEvents(sink)
    run.start()
    # A retry within one batch: the restart stays, the first start is `started`.
    first = Running()
    run.task("flaky", first)
    run.task("flaky", Retrying("boom"))
    run.task("flaky", Running())
    run.task("flaky", Success(result=1))
    # A Running with a message is history of its own.
    run.task("noted", Running("waiting for a lock"))
    run.task("noted", Success(result=2))
    run.finish()
    sink.flush()
    assert [k for k, _ in history(store, run.run_id + "/flaky")] == [
        "Retrying", "Running", "Success"]
    assert task_run(store, run.run_id + "/flaky").started == first.timestamp
    assert [k for k, _ in history(store, run.run_id + "/noted")] == ["Running", "Success"]

    # A resumed run: its task run is in the store already, so its start is recorded.
    again = RunEvents(sink, run_id=run.run_id)
    again.start(resumed=True)
    again.task("flaky", Running())
    again.task("flaky", Success(result=3))
    again.finish()
    sink.flush()
    assert [k for k, _ in history(store, run.run_id + "/flaky")] == [
        "Retrying", "Running", "Success", "Running", "Success"]
    assert task_run(store, run.run_id + "/flaky").started == first.timestamp


def test_the_dashboard_times_a_loops_first_iteration_from_its_start(store, sink):
    run = RunEvents(sink)
    run.start()
    start = Running(loop_index=0)
    run.task("acc", start)
    t0 = start.timestamp
    for i in range(3):
        looped = Looped(result=i, loop_index=i)
        looped.timestamp = t0 + 1.0 + i  # one second per iteration
        run.task("acc", looped, loop_index=i)
    end = Success(result=3, loop_count=4)
    end.timestamp = t0 + 4.0
    run.task("acc", end, loop_index=3)
    run.finish()
    sink.flush()
    tid = run.task_run_id("acc")
    assert "Running" not in [k for k, _ in history(store, tid)]
    key = task_run(store, tid).id

    page = iteration_page(store, key)
    assert [round(r.duration, 6) for r in page.rows] == [1.0, 1.0, 1.0, 1.0]
    summary = iteration_summary(store, key)
    assert summary.iterations == 4 and summary.max == 1.0 and summary.p50 == 1.0
    detail = iteration_detail(store, tid, key, 0)
    assert detail["started"] == t0
    assert [s.kind for s in detail["states"]] == ["Looped"]


def test_a_mapped_flow_run_records_its_children_without_running_rows(store):
    from iterflow import Flow, Parameter, task

    with Flow("fan") as flow:
        task(lambda x: x + 1, name="inc").map(Parameter("items"))
    state = flow.run(parameters={"items": [1, 2, 3]}, store=store)
    assert state.is_successful()
    (run,) = store.list_runs()
    children = [t for t in store.task_runs(run.run_id) if t.map_index is not None]
    assert len(children) == 3
    for child in children:
        assert [k for k, _ in history(store, child.task_run_id)] == ["Success"]
        assert child.started is not None and child.started <= child.ended
