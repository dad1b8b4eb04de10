"""Two processes never drive one run (issue: a suspended `flow.run` and a resume).

Real processes, suspended with SIGSTOP and continued with SIGCONT. On this
host a live process is alive whatever its heartbeat says, so a resume is
refused. A process on another host cannot be checked: there a resume claims
the run with a new owner token, and the first process, when it goes on, finds
its claim gone at its next write and stops without writing anything more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from iterflow.errors import RunNotResumable
from iterflow.store import get_run, iterations, list_runs, open_store
from tests.cli.helpers import COMMAND

from .helpers import wait_for

LOOPING = """
@task
def count(n):
    i = iterflow.context.loop_index
    mark("iterations", os.getpid(), i)
    time.sleep(0.01)
    total = iterflow.context.get("loop_result", 0) + i
    if i < n - 1:
        raise LOOP(result=total)
    return total


with Flow("two drivers") as flow:
    count(Parameter("n"))
"""

N = 300


def iterations_by(script) -> dict[int, list[int]]:
    """The loop indexes each process ran, by pid, from the side file."""
    seen: dict[int, list[int]] = {}
    for pid, i in script.side("iterations"):
        seen.setdefault(int(pid), []).append(int(i))
    return seen


def test_a_stopped_process_on_this_host_keeps_its_run(flow_script, store_url):
    script = flow_script(LOOPING, store_url)
    proc = script.start("run", f"{{'n': {N}}}")
    try:
        wait_for(lambda: len(script.side("iterations")) >= 20, "20 iterations",
                 proc=proc, script=script)
        _stop_outside_a_write(proc, store_url)
        (run,) = list_runs(store=store_url)
        # Its heartbeat goes stale: a store that waits only 0.2 s for one.
        with open_store(store_url, stale_after=0.2) as impatient:
            time.sleep(0.5)
            assert impatient.get_run(run.run_id).state == "Running"
            flow = script.load()["flow"]
            with pytest.raises(RunNotResumable) as refused:
                flow.run(resume=run.run_id, store=impatient)
        message = str(refused.value)
        assert f"process {proc.pid}" in message and "--force" in message
        assert get_run(run.run_id, store=store_url).recorded_state == "Running"
    finally:
        proc.send_signal(signal.SIGCONT)
    result = script.finish(proc)
    assert result["state"] == "Success"
    assert result["results"]["count"] == sum(range(N))
    # One driver: every iteration ran once, in the one process.
    assert iterations_by(script) == {proc.pid: list(range(N))}


def test_a_process_whose_run_was_resumed_elsewhere_stops_at_its_next_write(
    flow_script, store_url
):
    script = flow_script(LOOPING, store_url)
    first = script.start("run", f"{{'n': {N}}}")
    try:
        wait_for(lambda: len(script.side("iterations")) >= 20, "20 iterations",
                 proc=first, script=script)
        _stop_outside_a_write(first, store_url)
        (run,) = list_runs(store=store_url)
        # As if it ran on another host, and its heartbeat went quiet there.
        with open_store(store_url) as store, store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE flow_runs SET host = 'elsewhere', heartbeat = :old "
                        "WHERE run_id = :run"),
                {"old": time.time() - 3600, "run": run.run_id},
            )
        assert get_run(run.run_id, store=store_url).state == "Crashed"
        second = script.start("resume", run.run_id)
        wait_for(lambda: second.pid in iterations_by(script), "the resumed run to loop",
                 proc=second, script=script)
        before = len(iterations_by(script)[first.pid])
    finally:
        first.send_signal(signal.SIGCONT)
    # The first process stops at its next write, saying why, and writes nothing more.
    code = first.wait(timeout=60)
    err = script.output(first)[1]
    assert code != 0 and "RunTakenOver" in err and "taken over by another process" in err
    result = script.finish(second)
    assert result["state"] == "Success" and result["results"]["count"] == sum(range(N))
    info = get_run(run.run_id, store=store_url)
    assert (info.state, info.pid) == ("Success", second.pid)
    # The first process went on only until its writer's next commit (every 50 ms;
    # an iteration takes 10 ms), then stopped.
    firsts = iterations_by(script)[first.pid]
    assert firsts == list(range(len(firsts))) and len(firsts) <= before + 15, (before, firsts)
    # The record is one history: each iteration recorded once, the second
    # process's after the last one the first committed.
    recorded = [h.loop_index for h in iterations(run.run_id, "count", store=store_url)
                if h.state == "Looped"]
    assert recorded == list(range(N - 1))


CLI_FLOW = """
import os
import time

import iterflow
from iterflow import LOOP, Flow, task

HERE = os.path.dirname(os.path.abspath(__file__))


@task
def count(n):
    i = iterflow.context.loop_index
    with open(os.path.join(HERE, "iterations"), "a") as fh:
        fh.write(f"{os.getpid()} {i}\\n")
    time.sleep(0.01)
    total = iterflow.context.get("loop_result", 0) + i
    if i < n - 1:
        raise LOOP(result=total)
    return total


with Flow("two drivers") as flow:
    count(300)
"""


def test_iterflow_resume_refuses_a_stopped_run_and_force_takes_it_over(tmp_path, home):
    (tmp_path / "looping.py").write_text(CLI_FLOW)
    env = {**os.environ, "ITERFLOW_HOME": str(home), "NO_COLOR": "1"}
    env.pop("ITERFLOW_STORE_URL", None)
    side = tmp_path / "iterations"

    def by_pid() -> dict[int, list[int]]:
        seen: dict[int, list[int]] = {}
        text = side.read_text() if side.exists() else ""
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):
                pid, i = line.split()
                seen.setdefault(int(pid), []).append(int(i))
        return seen

    def cli(*args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*COMMAND, *args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    first = cli("run", "looping.py", "-q")
    forced = None
    try:
        wait_for(lambda: len(by_pid().get(first.pid, ())) >= 20, "20 iterations", proc=first)
        _stop_outside_a_write(first, f"sqlite:///{home / 'iterflow.db'}")
        (run,) = list_runs(store=f"sqlite:///{home / 'iterflow.db'}")
        refused = cli("resume", run.run_id[:8], "-q")
        out, err = refused.communicate(timeout=60)
        assert refused.returncode != 0
        assert f"process {first.pid}" in out + err and "--force" in out + err
        assert first.pid in by_pid() and len(by_pid()) == 1  # the refused one ran nothing

        forced = cli("resume", run.run_id[:8], "-q", "--force")
        wait_for(lambda: forced.pid in by_pid(), "the forced resume to loop", proc=forced)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0 and "taken over" in out + err, out + err
    out, err = forced.communicate(timeout=120)
    assert forced.returncode == 0, out + err
    info = get_run(run.run_id, store=f"sqlite:///{home / 'iterflow.db'}")
    assert (info.state, info.pid) == ("Success", forced.pid)


def _stop_outside_a_write(proc: subprocess.Popen, url: str) -> None:
    """SIGSTOP ``proc`` at a moment its writer holds no write lock on the store.

    A process stopped inside a write transaction keeps what it wrote locked
    until it goes on (SQLite's file lock, PostgreSQL's row locks): nothing
    anyone writes can change that, and it is not what these tests are about.
    So try the locks a resume needs, without waiting, after stopping it; if they
    cannot be had, let the process go on a little and stop it again.
    """
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        if _no_write_in_progress(url):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the looping process always held a write lock on the store")


def _no_write_in_progress(url: str) -> bool:
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2,
                               isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # Conflicts with any open transaction that wrote these tables, or locked
            # rows of them (the owner check's SELECT ... FOR UPDATE comes before any
            # write: a process stopped right after it holds its run's row all the same).
            conn.exec_driver_sql(
                "LOCK TABLE flow_runs, task_runs, state_transitions, counters "
                "IN EXCLUSIVE MODE NOWAIT"
            )
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()
