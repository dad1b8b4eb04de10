"""``flow.run(run_id=ID)`` is idempotent (DESIGN §11): a cron line can simply run again.

A finished run returns its recorded result and runs nothing; a Failed,
Cancelled or Crashed run of the same flow is resumed; a live one is refused
with its pid and host; an id of another flow is refused; a new id starts a new
run. Of two processes starting the same new id at once exactly one runs it.
"""

from __future__ import annotations

import os
import signal

import pytest

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.errors import IterflowError, RunNotResumable
from iterflow.store import get_run, list_runs, open_store, task_runs

from .helpers import kill, wait_for

CALLS: list[str] = []


@task
def double(x):
    CALLS.append("double")
    return 2 * x


@task
def count(n):
    i = iterflow.context.loop_index
    CALLS.append(f"count {i}")
    if os.environ.get("ITERFLOW_TEST_FAIL_AT") == str(i):
        raise ValueError(f"failing at {i}")
    if i < n - 1:
        raise LOOP(result=i)
    return i


def make_flow(name: str = "nightly") -> tuple[Flow, object, object]:
    with Flow(name) as flow:
        d = double(Parameter("x", default=4))
        c = count(Parameter("n", default=3))
    return flow, d, c


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()
    yield


def test_new_id_starts_a_run_under_that_id(store_url):
    flow, d, _ = make_flow()
    state = flow.run(run_id="sync-2026-12-06", store=store_url)
    assert state.is_successful() and state.run_id == "sync-2026-12-06"
    with open_store(store_url) as store:
        assert get_run("sync-2026-12-06", store=store).state == "Success"
    assert state.result[d].result == 8


def test_finished_run_returns_its_recorded_result_without_running(store_url):
    flow, d, c = make_flow()
    first = flow.run(run_id="sync-1", store=store_url)
    assert first.is_successful()
    with open_store(store_url) as store:
        recorded = [(t.task_slug, t.state, t.loop_count) for t in task_runs("sync-1", store=store)]
    CALLS.clear()
    again = flow.run(run_id="sync-1", store=store_url)
    assert CALLS == []  # nothing ran
    assert again.is_successful() and again.run_id == "sync-1"
    assert again.result[d].result == 8
    assert again.result[c].result == 2
    with open_store(store_url) as store:
        assert len(list_runs(store=store)) == 1
        # The run is left exactly as it was.
        assert [
            (t.task_slug, t.state, t.loop_count) for t in task_runs("sync-1", store=store)
        ] == recorded
        assert get_run("sync-1", store=store).state == "Success"


def test_failed_run_is_resumed(store_url, monkeypatch):
    flow, d, c = make_flow()
    monkeypatch.setenv("ITERFLOW_TEST_FAIL_AT", "1")
    failed = flow.run(run_id="sync-2", store=store_url)
    assert failed.is_failed()
    monkeypatch.delenv("ITERFLOW_TEST_FAIL_AT")
    CALLS.clear()
    again = flow.run(run_id="sync-2", store=store_url)
    assert again.is_successful() and again.run_id == "sync-2"
    # double finished and is not run again; count continues at the iteration that failed.
    assert CALLS == ["count 1", "count 2"]
    assert again.result[c].result == 2 and again.result[d].result == 8


def test_id_of_another_flow_is_refused_and_nothing_changes(store_url):
    flow, _, _ = make_flow("nightly")
    other, _, _ = make_flow("weekly")
    flow.run(run_id="sync-3", store=store_url)
    CALLS.clear()
    with pytest.raises(RunNotResumable, match="flow 'nightly'") as info:
        other.run(run_id="sync-3", store=store_url)
    assert isinstance(info.value, IterflowError)
    assert "weekly" in str(info.value) and "another run id" in str(info.value)
    assert CALLS == []
    with open_store(store_url) as store:
        run = get_run("sync-3", store=store)
        assert (run.flow_name, run.state) == ("nightly", "Success")


def test_a_prefix_of_a_recorded_id_is_a_new_id(store_url):
    flow, _, _ = make_flow()
    flow.run(run_id="sync-2026-12-06", store=store_url)
    CALLS.clear()
    state = flow.run(run_id="sync-2026", store=store_url)
    assert state.run_id == "sync-2026" and "double" in CALLS


def test_a_run_that_never_starts_frees_its_id(store_url):
    flow, _, _ = make_flow()

    class Unreachable:
        remote = False

        def start(self):
            raise ConnectionError("no cluster here")

    with pytest.raises(ConnectionError):
        flow.run(run_id="sync-4", store=store_url, executor=Unreachable())
    with open_store(store_url) as store:
        assert list_runs(store=store) == []
    assert flow.run(run_id="sync-4", store=store_url).is_successful()


SLOW = """
@task
def slow():
    mark("ran", os.getpid())
    wait_for_file("go")
    return "done"


with Flow("slow") as flow:
    slow()
"""


def test_live_run_is_refused_with_its_pid_and_host(flow_script, store_url):
    script = flow_script(SLOW, store_url)
    first = script.start("run", RUN_ID="job-1")
    wait_for(lambda: script.side("ran"), "the first run to start", proc=first, script=script)
    second = script.start("run", RUN_ID="job-1")
    assert second.wait(timeout=60) != 0
    err = script.output(second)[1]
    assert "RunNotResumable" in err and f"process {first.pid} on" in err
    (script.dir / "go").write_text("")
    assert script.finish(first)["results"] == {"slow": "done"}
    assert len(script.side("ran")) == 1


def test_crashed_run_is_resumed_by_running_the_same_id_again(flow_script, store_url):
    script = flow_script(SLOW, store_url)
    first = script.start("run", RUN_ID="job-2")
    wait_for(lambda: script.side("ran"), "the first run to start", proc=first, script=script)
    kill(first, signal.SIGKILL)
    (script.dir / "go").write_text("")
    out = script.run("run", RUN_ID="job-2")
    assert out == {"run_id": "job-2", "state": "Success", "results": {"slow": "done"}}
    # Finished now: a third start returns the result without running the task.
    assert script.run("run", RUN_ID="job-2")["results"] == {"slow": "done"}
    assert len(script.side("ran")) == 2


def test_two_processes_starting_one_new_id_at_once_run_it_once(flow_script, store_url):
    script = flow_script(SLOW, store_url)
    procs = [script.start("run", RUN_ID="job-3") for _ in range(2)]
    # Exactly one gets in; the other is refused as live, before running anything.
    wait_for(lambda: any(p.poll() is not None for p in procs) and script.side("ran"),
             "one process to be refused and the other to run", timeout=60)
    refused = [p for p in procs if p.poll() is not None]
    assert len(refused) == 1 and refused[0].returncode != 0
    assert "is still running" in script.output(refused[0])[1]
    (script.dir / "go").write_text("")
    winner = next(p for p in procs if p is not refused[0])
    assert script.finish(winner)["state"] == "Success"
    assert len(script.side("ran")) == 1


CLI_FLOW = """
import os
from iterflow import Flow, task


@task
def step():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ran"), "a") as fh:
        fh.write("x\\n")
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fail")):
        raise RuntimeError("upstream not ready")
    return 1


with Flow("cron") as flow:
    step()
"""


def test_cli_run_id_runs_once_then_reports_the_finished_run(tmp_path, home):
    import subprocess
    import sys

    path = tmp_path / "cron.py"
    path.write_text(CLI_FLOW)
    (tmp_path / "fail").write_text("")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "iterflow", "run", str(path), "--run-id", "sync-1", "-q"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
        )

    failed = cli()
    assert failed.returncode == 1, failed.stderr
    assert "iterflow resume sync-1" in failed.stderr + failed.stdout
    (tmp_path / "fail").unlink()
    resumed = cli()
    assert resumed.returncode == 0, resumed.stderr
    again = cli()
    assert again.returncode == 0, again.stderr
    assert "already finished Success: nothing ran" in again.stdout
    assert (tmp_path / "ran").read_text().count("x") == 2


def test_an_id_inserted_by_another_process_between_look_and_insert_is_refused_clearly(
    store_url, monkeypatch
):
    """The race of two starts of one new id: the loser's insert fails, and it says why."""
    import sqlalchemy as sa

    from iterflow.store import idempotent

    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite's write lock keeps the other insert out until this one ends")
    real = idempotent.allocate_ids
    other = sa.create_engine(store_url)

    def allocate_after_another_insert(conn, count):
        # What the other process does between this one's look and its insert.
        monkeypatch.setattr(idempotent, "allocate_ids", real)
        with other.begin() as theirs:
            theirs.execute(sa.text(
                "INSERT INTO flow_runs (id, run_id, flow_name, state, started, pid, host, "
                "heartbeat, owner) VALUES (987654, 'job-race', 'nightly', 'Running', :t, "
                ":pid, :host, :t, 'theirs')"),
                {"t": __import__("time").time(), "pid": os.getppid(),
                 "host": idempotent.HOST})
        return real(conn, count)

    monkeypatch.setattr(idempotent, "allocate_ids", allocate_after_another_insert)
    flow, _, _ = make_flow()
    try:
        with pytest.raises(RunNotResumable, match="still running"):
            flow.run(run_id="job-race", store=store_url)
    finally:
        other.dispose()
    assert CALLS == []  # nothing ran
