"""Deleting runs: everything of the run goes, nothing of the others, live runs stay."""

from __future__ import annotations

import datetime
import time

import pytest
import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.states import Failed, Looped, Running, Success
from iterflow.store import delete_run, runs_older_than
from iterflow.store.results import FILE_THRESHOLD

from .helpers import RunEvents

COUNTS = {
    "flow_runs": "SELECT count(*) FROM flow_runs WHERE run_id = :r",
    "task_runs": "SELECT count(*) FROM task_runs WHERE flow_run_id = :r",
    "state_transitions": "SELECT count(*) FROM state_transitions s "
                         "JOIN flow_runs f ON f.id = s.flow_run WHERE f.run_id = :r",
    "logs": "SELECT count(*) FROM logs l JOIN flow_runs f ON f.id = l.flow_run "
            "WHERE f.run_id = :r",
}


def counts(store, run_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {name: conn.execute(sa.text(sql), {"r": run_id}).scalar()
                for name, sql in COUNTS.items()}


def record_run(sink, *, big: bool = False) -> RunEvents:
    run = RunEvents(sink)
    run.start(parameters={"day": datetime.date(2026, 1, 1)})  # pickled into `results`
    run.task("t", Running())
    run.log("hello", slug="t")
    value = "x" * (FILE_THRESHOLD + 1) if big else 1
    run.task("t", Looped(result=value, loop_index=0))
    run.task("t", Success(result=2, loop_count=2), loop_index=1)
    for i in range(3):
        run.task("m", Running(), map_index=i)
        run.task("m", Success(result=i, loop_count=1), map_index=i)
    run.finish()
    return run


def test_deleting_a_run_removes_all_of_it_and_nothing_else(store, sink, home):
    gone = record_run(sink, big=True)
    kept = record_run(sink, big=True)
    sink.flush()
    files_before = {p.parent.name for p in (home / "results").rglob("*") if p.is_file()}
    assert files_before == {gone.run_id, kept.run_id}
    with store.engine.connect() as conn:
        results_before = conn.execute(sa.text("SELECT count(*) FROM results")).scalar()

    assert delete_run(gone.run_id[:10], store=store) == gone.run_id
    assert counts(store, gone.run_id) == dict.fromkeys(COUNTS, 0)
    assert [r.run_id for r in store.list_runs()] == [kept.run_id]
    with store.engine.connect() as conn:
        # Its pickled parameters and its file's row went with it; the other run's stayed.
        assert conn.execute(sa.text("SELECT count(*) FROM results")).scalar() == (
            results_before - 2
        )
    files_after = {p.parent.name for p in (home / "results").rglob("*") if p.is_file()}
    assert files_after == {kept.run_id}

    # The other run is whole: history, values, logs, resume point.
    # (Each task run starts and ends in one batch: no Running rows, see store.batch_rows.BatchRows.)
    assert counts(store, kept.run_id) == {
        "flow_runs": 1, "task_runs": 4, "state_transitions": 7, "logs": 1,
    }
    history = store.iterations(kept.run_id, "t")
    assert store.load_result(history[0].result_id) == "x" * (FILE_THRESHOLD + 1)
    assert store.resume_point(kept.run_id).parameters == {"day": datetime.date(2026, 1, 1)}
    with pytest.raises(StoreError, match="No run"):
        delete_run(gone.run_id, store=store)


def test_a_live_run_is_refused_and_a_finished_one_may_go(store, sink):
    live = RunEvents(sink)
    live.start()
    live.task("t", Running())
    sink.flush()
    with pytest.raises(StoreError, match=r"still running \(process \d+ on .*stop it"):
        delete_run(live.run_id, store=store)
    assert counts(store, live.run_id)["task_runs"] == 1
    live.finish(Failed("stopped"))
    sink.flush()
    delete_run(live.run_id, store=store)
    assert counts(store, live.run_id) == dict.fromkeys(COUNTS, 0)


def test_runs_older_than_picks_finished_runs_by_age_and_state(store, sink):
    old_ok, old_failed, new_ok = RunEvents(sink), RunEvents(sink), RunEvents(sink)
    for run, end in ((old_ok, Success("ok")), (old_failed, Failed("no")), (new_ok, Success())):
        run.start()
        run.finish(end)
    old_live = RunEvents(sink)
    old_live.start()
    sink.flush()
    month_ago = time.time() - 31 * 86400
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE flow_runs SET started = :t WHERE run_id IN (:a, :b, :c)"),
            {"t": month_ago, "a": old_ok.run_id, "b": old_failed.run_id, "c": old_live.run_id},
        )
    assert set(runs_older_than(30, store=store)) == {old_ok.run_id, old_failed.run_id}
    assert runs_older_than(30, state="Failed", store=store) == [old_failed.run_id]
    assert runs_older_than(40, store=store) == []
    old_live.finish()
    sink.flush()
