"""The store's writer process: what it records is what the writer thread records.

A sink on a SQLite file hands its batches to the writer process
(``iterflow.store.writer_process``) once it has committed enough records
(``ITERFLOW_WRITER=auto``), or from its first batch (``process``). Either
way the rows must be the ones the writer thread leaves: for random flows
(chains, maps, loop blocks, failing tasks, big and unpicklable values, labels)
and for a loop handed over in the middle of its iterations, with metrics and
log lines. The rows name the process driving the run, not the writer process;
a writer process that dies fails the sink clearly and keeps what it committed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import LOOP, Flow, log_metric, task
from iterflow.errors import StoreError
from iterflow.store import iterations, list_runs, metrics, open_store
from iterflow.store import writer_process as wp

from .helpers import run_rows
from .test_task_lane import STEP, _flow


@pytest.fixture
def fresh_policy(monkeypatch):
    """A clean slate: no writer process given up on (a test may kill one)."""
    monkeypatch.setattr(wp, "_broken", False)
    yield monkeypatch


def _counting_flow(n: int) -> tuple[Flow, object]:
    @task(name="count")
    def count(limit):
        ctx = iterflow.context
        i = ctx.loop_index
        total = ctx.get("loop_result", 0) + i
        log_metric("total", total)
        log_metric("i", i)
        if i % 500 == 0:
            ctx.logger.info("at %d", i)
        if i % 7 == 0:
            iterflow.set_iteration_label(f"seven {i}")
        if i < limit - 1:
            raise LOOP(result=total)
        return total

    with Flow("counting") as flow:
        last = count(n)
    return flow, last


def _loop_rows(store, run_id: str) -> dict:
    """Everything a reader sees of a counting run, times and ids left out."""
    def query(conn):
        return conn.execute(sa.text(
            "SELECT s.kind, s.loop_index, s.preview, s.label, s.data IS NOT NULL "
            "FROM state_transitions s JOIN task_runs t ON s.task_run = t.id "
            "WHERE t.flow_run_id = :r ORDER BY s.id"
        ), {"r": run_id}).all()

    return {
        "states": [tuple(r) for r in store.read(query)],
        "metrics": [(m.name, m.loop_index, m.value) for m in metrics(run_id, store=store)],
        "logs": [(line.loop_index, line.message) for line in store.logs(run_id)],
        "runs": [(r.state, r.pid) for r in list_runs(store=store) if r.run_id == run_id],
    }


def _process_of_this_test():
    process = wp.writer_process(start=False)
    assert process is not None and process.ready, "the writer process did not take over"
    return process


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(STEP, min_size=1, max_size=4))
def test_the_writer_process_records_what_the_thread_records(tmp_path_factory, plan):
    url = f"sqlite:///{tmp_path_factory.mktemp('proc')}/s.db"
    with pytest.MonkeyPatch.context() as patch, open_store(url) as store:
        patch.setenv("ITERFLOW_WRITER", "thread")
        by_thread = _flow(plan, with_handler=False).run(store=store)
        patch.setenv("ITERFLOW_WRITER", "process")
        by_process = _flow(plan, with_handler=False).run(store=store)
        _process_of_this_test()
        assert type(by_thread) is type(by_process)
        # Task runs and states but Running (where a batch ends decides which are kept).
        assert (run_rows(store, by_thread.run_id, data=False)[:2]
                == run_rows(store, by_process.run_id, data=False)[:2])


def test_a_loop_handed_over_mid_run_keeps_every_iteration(tmp_path, fresh_policy):
    n = 6000
    fresh_policy.setattr(wp, "HAND_OVER_AFTER", 1500)  # hand over a quarter of the way
    fresh_policy.setenv("ITERFLOW_WRITER", "auto")
    url = f"sqlite:///{tmp_path}/s.db"
    flow, last = _counting_flow(n)
    with open_store(url) as store:
        handed = flow.run(store=store)
        _process_of_this_test()
        fresh_policy.setenv("ITERFLOW_WRITER", "thread")
        kept = flow.run(store=store)
        assert handed.is_successful() and kept.is_successful()
        assert handed.result[last].result == kept.result[last].result == n * (n - 1) // 2
        by_process, by_thread = _loop_rows(store, handed.run_id), _loop_rows(store, kept.run_id)
    assert by_process == by_thread
    assert [i for kind, i, *_ in by_process["states"] if kind == "Looped"] == list(range(n - 1))
    assert len(by_process["metrics"]) == 2 * n
    # The writer process wrote most of it, in the name of this process.
    assert by_process["runs"] == [("Success", os.getpid())]


def test_a_short_run_is_written_by_the_thread(tmp_path, fresh_policy):
    fresh_policy.setenv("ITERFLOW_WRITER", "auto")
    flow, _ = _counting_flow(50)
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        sink = store.sink()
        assert sink._hand_over is not None and sink._hand_over.after == wp.HAND_OVER_AFTER
        sink.close()
        assert flow.run(store=store).is_successful()


def test_a_sink_hands_over_early_only_while_its_commits_are_hardly_waited_for(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        # A loop: only its run's first state waits for its commit.
        streaming = wp.HandOver(store, None, after=8192)
        assert not streaming.wants(2000, 1)
        assert streaming.wants(100, 0)  # 2,100 records, one wait
        # Subflows: each child run waits for two commits of its four records.
        waiting = wp.HandOver(store, None, after=8192)
        assert not any(waiting.wants(4, 2) for _ in range(2047))  # 8,188 records
        assert waiting.wants(4, 2)  # 8,192: the count alone decides
        # Given a lower count, that is the limit for both.
        low = wp.HandOver(store, None, after=1000)
        assert low.streaming == 1000 and low.wants(1000, 1000)


def _looping_flow(n: int, checkpoint: str | None = None) -> Flow:
    @task(checkpoint=checkpoint)
    def step():
        if iterflow.context.loop_index < n - 1:
            raise LOOP(result=iterflow.context.loop_index)
        return n

    with Flow("steps") as flow:
        step()
    return flow


def test_a_loop_hands_over_before_a_run_whose_iterations_wait(tmp_path, fresh_policy):
    fresh_policy.setenv("ITERFLOW_WRITER", "auto")
    started = wp.writer_process(start=True)
    assert started is not None and started.poll_ready(60.0)
    handed: list[object] = []

    class Counted(wp.RemoteBatches):
        def __init__(self, *args, **kwargs):
            handed.append(self)
            super().__init__(*args, **kwargs)

    fresh_policy.setattr(wp, "RemoteBatches", Counted)
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        # 3,000 iterations: past the streaming count, short of HAND_OVER_AFTER.
        assert wp.HAND_OVER_AFTER > 3000
        assert _looping_flow(3000, checkpoint="every").run(store=store).is_successful()
        assert handed == []  # each iteration waited for its commit: the thread kept it
        assert _looping_flow(3000).run(store=store).is_successful()
        assert len(handed) == 1
        assert len(iterations(list_runs(store=store)[0].run_id, "step", store=store)) >= 2999


def test_no_writer_process_for_the_thread_mode_or_a_server(tmp_path, fresh_policy):
    fresh_policy.setenv("ITERFLOW_WRITER", "thread")
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        assert wp.hand_over_policy(store) is None
    fresh_policy.setenv("ITERFLOW_WRITER", "auto")
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        assert wp.hand_over_policy(store) is not None
    with open_store(f"sqlite:///{tmp_path}/s.db", read_only=True) as store:
        assert wp.hand_over_policy(store) is None


def test_an_unknown_writer_mode_is_a_clear_error(tmp_path, fresh_policy):
    fresh_policy.setenv("ITERFLOW_WRITER", "proces")
    flow, _ = _counting_flow(3)
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        with pytest.raises(StoreError, match=r"ITERFLOW_WRITER is 'proces': it must be"):
            flow.run(store=store)
        assert list_runs(store=store) == []


def test_a_writer_process_that_dies_fails_the_run_clearly_and_keeps_what_it_wrote(
    tmp_path, fresh_policy
):
    fresh_policy.setenv("ITERFLOW_WRITER", "process")
    url = f"sqlite:///{tmp_path}/s.db"
    killed = []

    def committed() -> bool:
        # Killed only once it has committed some of the loop: on a loaded machine its
        # first commit may come after any fixed iteration (then nothing is kept).
        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
            return db.execute("SELECT 1 FROM state_transitions WHERE kind = 'Looped' "
                              "LIMIT 1").fetchone() is not None

    @task(name="spin")
    def spin():
        i = iterflow.context.loop_index
        if not killed and i >= 200 and committed():
            process = _process_of_this_test()
            os.kill(process._popen.pid, signal.SIGKILL)
            killed.append(process._popen.pid)
            process._popen.wait()
        if i < 100_000:
            time.sleep(0.0002)
            raise LOOP(result=i)
        return i

    with Flow("doomed") as flow:
        spin()
    with open_store(url) as store:
        with pytest.raises(StoreError, match=r"writer process \(pid \d+\) stopped") as caught:
            flow.run(store=store)
        assert "Resume the run" in str(caught.value)
        (run,) = list_runs(store=store)
        # What the process committed before it died is kept, in order; the run resumes.
        looped = [h.loop_index for h in iterations(run.run_id, "spin", store=store)
                  if h.state == "Looped"]
        assert looped == list(range(len(looped))) and len(looped) >= 1
        assert run.state in ("Crashed", "Failed")
    assert killed
    # The process gives up on writer processes: the next run writes itself, and succeeds.
    assert wp._broken
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wp, "_broken", True)
        with Flow("after") as after:
            task(lambda: 1, name="one")()
        with open_store(url) as store:
            assert after.run(store=store).is_successful()
            assert store.sink()._hand_over is None


def test_a_forked_process_does_not_use_its_parents_writer_process(tmp_path, fresh_policy):
    fresh_policy.setenv("ITERFLOW_WRITER", "process")
    flow, _ = _counting_flow(20)
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        assert flow.run(store=store).is_successful()
    parents = _process_of_this_test()
    pid = os.fork()
    if pid == 0:  # the child: must not see its parent's writer process as its own
        code = 0 if wp.writer_process(start=False) is None else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wp.writer_process(start=False) is parents
