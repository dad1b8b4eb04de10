"""One history per task run: a late non-final state after a recorded final one is refused.

A rerun of a finished task run (distributed recomputing a child whose worker
died) can send a ``Running`` or ``Looped`` after the child's ``Success``. The
store sink records neither and says so in the run's log and in Python
logging; a retry (``Retrying`` then ``Running``) and a resumed run (a new
sink) still record as before.
"""

from __future__ import annotations

import logging

from iterflow.states import Failed, Looped, Mapped, Retrying, Running, Success

from .helpers import RunEvents


def test_a_late_running_after_success_is_ignored_and_logged(store, sink, caplog):
    run = RunEvents(sink, flow_name="late")
    run.start(tasks=(("work-1", "work"),))
    run.task("work-1", Running(), map_index=3)
    run.task("work-1", Looped(result=1), map_index=3)
    run.task("work-1", Success(result=2), loop_index=1, map_index=3)
    with caplog.at_level(logging.WARNING, logger="iterflow.store"):
        # The rerun's events, arriving after the final state.
        run.task("work-1", Running(), loop_index=1, map_index=3)
        run.task("work-1", Looped(result=99), loop_index=1, map_index=3)
    run.finish()
    sink.flush()

    (task_run,) = store.task_runs(run.run_id)
    assert (task_run.state, task_run.loop_index, task_run.result_preview) == ("Success", 1, "2")
    history = store.iterations(run.run_id, "work-1", 3)
    assert [(h.state, h.loop_index) for h in history] == [("Looped", 0), ("Success", 1)]
    tid = run.task_run_id("work-1", 3)
    warnings = [e for e in store.logs(run.run_id) if e.level == logging.WARNING]
    assert [e.task_run_id for e in warnings] == [tid, tid]
    assert "Running" in warnings[0].message and tid in warnings[0].message
    assert "Looped" in warnings[1].message
    logged = [r.getMessage() for r in caplog.records if r.name == "iterflow.store"]
    assert len(logged) == 2 and all(tid in m for m in logged)


def test_a_mapped_parent_is_guarded_too(store, sink):
    run = RunEvents(sink)
    run.start(tasks=(("fan-1", "fan"),))
    run.task("fan-1", Running())
    run.task("fan-1", Mapped())
    run.task("fan-1", Running())
    run.finish()
    sink.flush()
    (task_run,) = store.task_runs(run.run_id)
    assert task_run.state == "Mapped"


def test_a_retry_and_a_failed_task_run_reopened_still_record(store, sink):
    run = RunEvents(sink)
    run.start(tasks=(("flaky-1", "flaky"),))
    run.task("flaky-1", Running())
    run.task("flaky-1", Retrying("again"))
    run.task("flaky-1", Running())
    run.task("flaky-1", Failed("boom"))
    # A retried subflow task resumes its child through the same sink: a Failed
    # task run runs again, and that is recorded.
    run.task("flaky-1", Running())
    run.task("flaky-1", Success(result=5))
    run.finish()
    sink.flush()
    (task_run,) = store.task_runs(run.run_id)
    assert (task_run.state, task_run.result_preview) == ("Success", "5")
    assert not [e for e in store.logs(run.run_id) if e.level == logging.WARNING]


def test_a_new_sink_may_reopen_what_an_earlier_one_finished(store):
    first = store.sink()
    run = RunEvents(first)
    run.start(tasks=(("acc-1", "acc"),))
    run.loop("acc-1", [1, 2], final=3)
    run.finish()
    first.close()

    # A rewind or resume drives the run again with a sink of its own.
    second = store.sink(owner=first.owner)  # as a resume that claimed the run
    try:
        again = RunEvents(second, run_id=run.run_id)
        again.start(resumed=True)
        again.task("acc-1", Running(), loop_index=1)
        again.task("acc-1", Success(result=7), loop_index=1)
        again.finish()
        second.flush()
    finally:
        second.close()
    (task_run,) = store.task_runs(run.run_id)
    assert (task_run.state, task_run.result_preview) == ("Success", "7")
    assert not [e for e in store.logs(run.run_id) if e.level == logging.WARNING]


def test_the_guard_forgets_a_run_once_it_ends(store, sink):
    run = RunEvents(sink)
    run.start(tasks=(("a-1", "a"),))
    run.task("a-1", Running())
    run.task("a-1", Success(result=1))
    assert sink._done
    run.finish()
    sink.flush()
    assert not sink._done  # memory stays bounded by the runs in flight
