"""Resumes that must not start, in this process: what they leave behind."""

from __future__ import annotations

import sqlite3
import sys

import pytest

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.errors import ParameterError, RunNotResumable, StoreError
from iterflow.store import get_run, iterations, kept_stores, list_runs, load_result, task_runs
from iterflow.store.runstore import RunStore


@pytest.fixture
def open_stores(monkeypatch):
    """Every RunStore made during the test, and whether it was closed."""
    made: dict[int, list] = {}
    init, close = RunStore.__init__, RunStore.close

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made[id(self)] = [self, False]

    def tracking_close(self):
        close(self)
        if id(self) in made:
            made[id(self)][1] = True

    monkeypatch.setattr(RunStore, "__init__", tracking_init)
    monkeypatch.setattr(RunStore, "close", tracking_close)

    def still_open() -> list[RunStore]:
        # A run that ended well keeps its store for the next run (kept_stores): not a
        # leak. Closing those first leaves only the stores nobody holds on to.
        kept_stores.close_all()
        return [store for store, closed in made.values() if not closed]

    return still_open


def counting_flow(fail_at: dict) -> Flow:
    @task
    def count(n):
        i = iterflow.context.loop_index
        if i == fail_at.get("i"):
            raise RuntimeError(f"stopped at {i}")
        if i < n - 1:
            raise LOOP(result=iterflow.context.get("loop_result", 0) + i)
        return iterflow.context.get("loop_result", 0) + i

    with Flow("edges") as flow:
        count(Parameter("n"))
    return flow


def test_a_run_that_was_refused_or_failed_to_start_closes_its_store(store_url, open_stores):
    fail_at = {"i": 2}
    flow = counting_flow(fail_at)
    failed = flow.run(parameters={"n": 4}, store=store_url)
    assert failed.is_failed() and open_stores() == []
    fail_at.clear()
    flow.run(resume=failed.run_id, store=store_url)
    assert open_stores() == []

    with pytest.raises(RunNotResumable, match="finished successfully"):
        flow.run(resume=failed.run_id, store=store_url)
    assert open_stores() == [], "a refused resume left its store open"
    with pytest.raises(RunNotResumable, match="No run 'nosuchrun'"):
        flow.run(resume="nosuchrun", store=store_url)
    assert open_stores() == [], "a resume of an unknown run left its store open"
    with pytest.raises(ParameterError, match="unknown parameter"):
        flow.run(parameters={"n": 1, "bogus": 2}, store=store_url)
    assert open_stores() == [], "a run with a bad parameter left its store open"


BOX = """
class Box:
    def __init__(self, value):
        self.value = value
"""


def test_a_resume_that_cannot_start_leaves_the_run_resumable(store_url, tmp_path, monkeypatch):
    # The loop result is an instance of a class from a module that the resuming
    # process cannot import: the resume is refused with a clear message, and
    # once the module is back the same process resumes the run.
    (tmp_path / "boxes_for_resume.py").write_text(BOX)
    monkeypatch.syspath_prepend(str(tmp_path))
    import boxes_for_resume

    fail_at = {"i": 2}

    @task
    def boxed(n):
        i = iterflow.context.loop_index
        if i == fail_at.get("i"):
            raise RuntimeError("stop here")
        total = iterflow.context.get("loop_result", boxes_for_resume.Box(0)).value + i
        if i < n - 1:
            raise LOOP(result=boxes_for_resume.Box(total))
        return total

    with Flow("boxes") as flow:
        boxed(Parameter("n"))

    run_id = flow.run(parameters={"n": 5}, store=store_url).run_id
    assert get_run(run_id, store=store_url).state == "Failed"

    (tmp_path / "boxes_for_resume.py").rename(tmp_path / "boxes_elsewhere.py")
    monkeypatch.delitem(sys.modules, "boxes_for_resume")
    with pytest.raises(RunNotResumable, match=r"cannot be loaded.*importable"):
        flow.run(resume=run_id, store=store_url)
    info = get_run(run_id, store=store_url)
    assert info.state == "Failed", f"the failed resume left the run {info.state} ({info})"

    (tmp_path / "boxes_elsewhere.py").rename(tmp_path / "boxes_for_resume.py")
    fail_at.clear()
    state = flow.run(resume=run_id, store=store_url)
    assert state.is_successful() and state.run_id == run_id
    assert list(state.result.values())[-1].result == sum(range(5))
    assert [r.state for r in list_runs(store=store_url)] == ["Success"]


def test_a_resume_runs_with_the_original_parameters_or_refuses_others(store_url):
    # Parameter tasks finished in the original run, so their values come from
    # the store; a different value given now would reach only the context.
    seen: list[tuple[int, int]] = []
    fail_at = {"i": 2}

    @task
    def count(n):
        i = iterflow.context.loop_index
        seen.append((n, iterflow.context.parameters["n"]))
        if i == fail_at.get("i"):
            raise RuntimeError("stop here")
        if i < n - 1:
            raise LOOP(result=i)
        return n

    with Flow("original parameters") as flow:
        count(Parameter("n"))
    run_id = flow.run(parameters={"n": 4}, store=store_url).run_id
    fail_at.clear()
    seen.clear()
    with pytest.raises(ParameterError, match=r"'n'.*differ") as refused:
        flow.run(resume=run_id, parameters={"n": 3}, store=store_url)
    assert run_id in str(refused.value)
    assert seen == [], "a task ran with parameters the original run did not have"
    assert get_run(run_id, store=store_url).state == "Failed"

    state = flow.run(resume=run_id, parameters={"n": 4}, store=store_url)  # the same: fine
    assert state.is_successful()
    assert seen == [(4, 4), (4, 4)]


def test_a_run_is_not_resumed_by_another_flow(store_url):
    fail_at = {"i": 2}
    failed = counting_flow(fail_at).run(parameters={"n": 4}, store=store_url)
    assert failed.is_failed()
    before = get_run(failed.run_id, store=store_url)

    @task
    def other(n):
        return n

    with Flow("another flow") as flow_b:
        other(Parameter("n"))
    with pytest.raises(RunNotResumable) as refused:
        flow_b.run(resume=failed.run_id, store=store_url)
    message = str(refused.value)
    assert "'edges'" in message and "'another flow'" in message and failed.run_id in message
    after = get_run(failed.run_id, store=store_url)
    assert after == before  # still Failed, still flow 'edges', nothing taken over
    fail_at.clear()
    resumed = counting_flow(fail_at).run(resume=failed.run_id, store=store_url)
    assert resumed.is_successful()


def fetch_and_report(calls: list, fail: dict):
    @task
    def fetch(what):
        calls.append(what)
        return f"data of {what}"

    @task
    def report(data):
        if fail.get("report"):
            raise RuntimeError("report broke")
        return f"report on {data}"

    return fetch, report


def test_a_resume_after_the_flow_changed_never_hands_a_task_another_calls_result(store_url):
    calls: list = []
    fail = {"report": True}
    fetch, report = fetch_and_report(calls, fail)
    with Flow("changing") as before:
        report(fetch("A"))
    failed = before.run(store=store_url)
    assert failed.is_failed() and calls == ["A"]

    # Between the failure and the resume, a call is added before fetch("A"): the
    # slug `fetch` now names fetch("B"), and fetch("A") is `fetch-2`.
    with Flow("changing") as after:
        b = fetch("B")
        a = fetch("A")
        r = report(a)
    assert (b.slug, a.slug) == ("fetch", "fetch-2")
    fail.clear()
    calls.clear()
    state = after.run(resume=failed.run_id, store=store_url)
    assert state.is_successful()
    assert state.result[b].result == "data of B"  # not A's recorded result
    assert state.result[a].result == "data of A"
    assert state.result[r].result == "report on data of A"
    assert sorted(calls) == ["A", "B"]
    shown = {t.task_slug: t.result_preview for t in task_runs(failed.run_id, store=store_url)}
    assert shown == {"fetch": "'data of B'", "fetch-2": "'data of A'",
                     "report": "'report on data of A'"}


def test_a_resume_reuses_the_tasks_that_did_not_change(store_url):
    calls: list = []
    fail = {"report": True}
    fetch, report = fetch_and_report(calls, fail)
    with Flow("growing") as before:
        report(fetch("A"))
    failed = before.run(store=store_url)
    assert failed.is_failed() and calls == ["A"]

    # A call added after the others changes no one's identity: fetch("A") is reused.
    with Flow("growing") as after:
        a = fetch("A")
        report(a)
        extra = fetch("B")
    fail.clear()
    calls.clear()
    state = after.run(resume=failed.run_id, store=store_url)
    assert state.is_successful()
    assert calls == ["B"]
    assert (state.result[a].result, state.result[extra].result) == ("data of A", "data of B")


def test_a_changed_loop_that_fails_again_at_once_restarts_at_its_first_iteration(store_url):
    seen: list = []
    fail_at: dict = {"i": 3}

    @task
    def count(step):
        i = iterflow.context.loop_index
        seen.append((step, i, iterflow.context.get("loop_result")))
        if i == fail_at.get("i"):
            raise RuntimeError(f"stopped at {i}")
        if i < 5:
            raise LOOP(result=iterflow.context.get("loop_result", 0) + step)
        return iterflow.context.get("loop_result", 0) + step

    with Flow("loops") as before:
        count(1)
    failed = before.run(store=store_url)
    assert failed.is_failed()  # iterations 0-2 recorded, with step 1

    with Flow("loops") as after:
        c = count(100)  # another call: it starts again, at iteration 0
    fail_at["i"] = 0
    seen.clear()
    assert after.run(resume=failed.run_id, store=store_url).is_failed()
    assert seen == [(100, 0, None)]
    # The next resume must not continue at iteration 3 with step 1's total.
    fail_at.clear()
    seen.clear()
    state = after.run(resume=failed.run_id, store=store_url)
    assert state.is_successful() and state.result[c].result == 600
    assert seen[0] == (100, 0, None)


def test_checkpoint_false_records_states_and_previews_and_a_resume_reruns_the_task(store_url):
    opened: list = []
    fail = {"report": True}

    @task(checkpoint=False)
    def connect():
        conn = sqlite3.connect(":memory:")  # cannot be pickled, nor recorded
        opened.append(conn)
        return conn

    @task(checkpoint=False)
    def rows(conn):
        i = iterflow.context.loop_index
        conn.execute("CREATE TABLE IF NOT EXISTS t (i)")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        if i < 2:
            raise LOOP(result={"conn": conn, "i": i})  # an unpicklable loop result too
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]

    @task
    def report(n):
        if fail.get("report"):
            raise RuntimeError("report broke")
        return f"{n} rows"

    with Flow("unrecorded") as flow:
        c = connect()
        r = rows(c)
        report(r)
    failed = flow.run(store=store_url)
    assert failed.is_failed()
    assert failed.result[c].is_successful() and failed.result[r].result == 3
    shown = {t.task_slug: t for t in task_runs(failed.run_id, store=store_url)}
    assert shown["connect"].state == "Success"
    assert "sqlite3.Connection" in shown["connect"].result_preview
    history = iterations(failed.run_id, "rows", store=store_url)
    assert [(h.state, h.loop_index) for h in history] == [
        ("Looped", 0), ("Looped", 1), ("Success", 2),
    ]
    assert "'i': 1" in history[1].preview
    with pytest.raises(StoreError, match="checkpoint=False"):
        load_result(history[1].result_id, store=store_url)

    # Nothing of theirs was kept to reuse: a resume runs both again, from the start.
    fail.clear()
    state = flow.run(resume=failed.run_id, store=store_url)
    assert state.is_successful() and len(opened) == 2
    assert state.result[r].result == 3 and state.result[c].result is opened[1]
