"""``iterflow serve`` end to end: real serve processes, real runs, real SIGKILL and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iterflow.store import get_run, iterations, lease, list_runs, open_store, ticks, triggers

FLOW = textwrap.dedent(
    """
    import os
    import time
    from datetime import timedelta

    import iterflow
    from iterflow import LOOP, Flow, Parameter, task
    from iterflow.schedules import Interval

    LOG = os.environ["SERVE_TEST_LOG"]

    @task(checkpoint="every")
    def count(n, pause):
        i = iterflow.context.loop_index
        with open(LOG, "a") as fh:
            fh.write(f"{os.getpid()} {i}\\n")
        time.sleep(pause)
        if i < n:
            raise LOOP(result=iterflow.context.get("loop_result", 0) + i)
        return iterflow.context.get("loop_result", 0) + i

    with Flow("ticker", schedules=[Interval(timedelta(seconds=1), parameters={"n": N})]) as flow:
        count(Parameter("n", default=1), pause=PAUSE)
    """
)


def write_flow(tmp_path: Path, n: int, pause: float) -> Path:
    path = tmp_path / "ticker_flow.py"
    path.write_text(FLOW.replace("N}", f"{n}}}").replace("PAUSE", str(pause)))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "home"))
    return {**os.environ, "ITERFLOW_HOME": str(tmp_path / "home"), "ITERFLOW_STORE_URL": url,
            "SERVE_TEST_LOG": str(tmp_path / "iterations.log")}


def start_serve(env, *args, out=None):
    return subprocess.Popen(
        [sys.executable, "-m", "iterflow", "serve", *map(str, args)], env=env,
        stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc, timeout=30.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def first_run(url):
    runs = list_runs(store=url)
    return runs[-1] if runs else None


def looped(url, run_id):
    try:
        return [r.loop_index for r in iterations(run_id, "count", store=url) if r.state == "Looped"]
    except Exception:
        return []


@pytest.fixture
def url(env):
    """The test's store, open (polling through a URL would open it on every look)."""
    store = open_store(env["ITERFLOW_STORE_URL"])
    yield store
    store.close()


def test_a_killed_run_is_resumed_at_its_last_iteration(tmp_path, env, url):
    proc = start_serve(env, write_flow(tmp_path, n=10, pause=0.15))
    try:
        run = wait_for(lambda: first_run(url), what="a scheduled run")
        wait_for(lambda: len(looped(url, run.run_id)) >= 3, what="three iterations")
        pid = get_run(run.run_id, store=url).pid
        os.kill(pid, signal.SIGKILL)
        recorded = looped(url, run.run_id)
        done = wait_for(lambda: get_run(run.run_id, store=url).state == "Success", timeout=45,
                        what="the resumed run to succeed")
        assert done
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "crashed; resuming it at its last iteration" in out
    lines = [line.split() for line in (tmp_path / "iterations.log").read_text().splitlines()]
    by_pid: dict[str, list[int]] = {}
    for p, i in lines:
        by_pid.setdefault(p, []).append(int(i))
    first, resumed = by_pid[str(pid)], by_pid[next(p for p in by_pid if p != str(pid))]
    assert first[0] == 0 and resumed[-1] == 10
    # Continued after the last recorded iteration, not from the top.
    assert resumed[0] == max(recorded) + 1 and resumed[0] > 0
    assert resumed == list(range(resumed[0], 11))
    tick = next(t for t in ticks("ticker", store=url) if t.run_id == run.run_id)
    assert tick.outcome == "launched" and tick.resumes == 1
    trigger = triggers([run.run_id], store=url)[run.run_id]
    assert (trigger.kind, trigger.schedule, trigger.resumes) == ("schedule", "every 1s", 1)
    assert trigger.scheduled == tick.scheduled
    # Ticks that came while the run was in flight were skipped, each recorded once.
    outcomes = {t.outcome for t in ticks("ticker", store=url)}
    assert "skipped" in outcomes
    listed = subprocess.run([sys.executable, "-m", "iterflow", "runs", "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    row = next(r for r in json.loads(listed.stdout) if r["run_id"] == run.run_id)
    assert row["trigger"]["kind"] == "schedule" and row["trigger"]["resumes"] == 1
    assert row["trigger"]["scheduled"].startswith("20")


def test_sigterm_stops_serve_and_cancels_runs_resumably(tmp_path, env, url):
    proc = start_serve(env, write_flow(tmp_path, n=200, pause=0.2))
    try:
        run = wait_for(lambda: first_run(url), what="a scheduled run")
        wait_for(lambda: looped(url, run.run_id), what="an iteration")
    finally:
        started = time.monotonic()
        code, out = stop(proc)
    assert code == 0, out
    assert time.monotonic() - started < 20
    assert get_run(run.run_id, store=url).state == "Cancelled"
    assert lease("ticker", store=url).stopped is not None  # the next serve need not wait
    assert "cancelling run" in out


def test_drain_waits_for_runs_in_flight(tmp_path, env, url):
    proc = start_serve(env, write_flow(tmp_path, n=4, pause=0.2), "--drain")
    try:
        run = wait_for(lambda: first_run(url), what="a scheduled run")
        wait_for(lambda: looped(url, run.run_id), what="an iteration")
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert get_run(run.run_id, store=url).state == "Success"
    assert len(list_runs(store=url)) == 1  # no launch once stopping


def test_two_serves_one_flow_one_refuses(tmp_path, env):
    path = write_flow(tmp_path, n=1, pause=0.01)
    first, second = start_serve(env, path), start_serve(env, path)
    try:
        loser = wait_for(lambda: next((p for p in (first, second) if p.poll() is not None), None),
                         what="one serve to refuse")
        winner = second if loser is first else first
        out, _ = loser.communicate(timeout=10)
        assert loser.returncode == 2, out
        assert f"already served by process {winner.pid} on {socket.gethostname()}" in out
        time.sleep(1.5)
        assert winner.poll() is None
    finally:
        for proc in (first, second):
            stop(proc)
    scheduled = [t.scheduled for t in ticks(store=env["ITERFLOW_STORE_URL"])]
    assert scheduled and len(scheduled) == len(set(scheduled))


CLAIMER = textwrap.dedent(
    """
    import sys
    from iterflow.store import open_store
    from iterflow.store.serving import claim_ticks

    store = open_store(sys.argv[1])
    won = []
    for k in range(60):
        row = {"flow_name": "race", "schedule": "s", "scheduled": float(k),
               "outcome": "launched", "run_id": sys.argv[2] + str(k)}
        if claim_ticks(store, [row])[0]:
            won.append(k)
    print(" ".join(map(str, won)))
    """
)


def test_racing_processes_record_each_tick_once(tmp_path, env, url):
    procs = [  # the store exists (fixture `url`): the processes race on ticks only
        subprocess.Popen([sys.executable, "-c", CLAIMER, env["ITERFLOW_STORE_URL"], name],
                         env=env,
                         stdout=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    won = [set(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not won[0] & won[1] and won[0] | won[1] == set(range(60))
    rows = ticks("race", store=url)
    assert len(rows) == 60
    assert {t.run_id for t in rows} == {("a" if t in won[0] else "b") + str(t) for t in range(60)}


SCRIPT = textwrap.dedent(
    """
    from iterflow import Flow, task
    from iterflow.schedules import Interval

    @task
    def hello():
        return "hello"

    with Flow("from-python", schedules=[Interval(1)]) as flow:
        hello()

    if __name__ == "__main__":
        flow.serve()
    """
)


def test_flow_serve_from_a_script(tmp_path, env, url):
    script = tmp_path / "serve_me.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: any(r.state == "Success" for r in list_runs(store=url)),
                 what="a successful scheduled run")
    finally:
        code, out = stop(proc)
    assert code == 0, out
    run = next(r for r in list_runs(store=url) if r.state == "Success")
    # The child ran the flow from the script's file: `iterflow resume` could load it too.
    assert run.source == f"{script.resolve()}:flow"
    listed = subprocess.run([sys.executable, "-m", "iterflow", "schedules", "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    (row,) = json.loads(listed.stdout)
    assert row["flow_name"] == "from-python" and row["served_by"]["alive"] is False
    assert row["schedules"][0]["kind"] == "interval" and len(row["next"]) == 3


def test_schedules_command_reads_files(tmp_path):
    from click.testing import CliRunner

    from iterflow.cli.main import cli

    path = write_flow(tmp_path, n=1, pause=0)
    result = CliRunner().invoke(cli, ["schedules", str(path), "--json", "-n", "2"],
                                env={"SERVE_TEST_LOG": str(tmp_path / "log")})
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["flow_name"] == "ticker" and row["source"].endswith("ticker_flow.py:flow")
    first, second = (n["time"] for n in row["next"])
    from datetime import datetime

    gap = datetime.fromisoformat(second) - datetime.fromisoformat(first)
    assert gap.total_seconds() == 1


def test_a_flow_in_no_file_is_sent_to_its_run_by_value(env, url):
    import threading

    from iterflow import Flow, Parameter, task
    from iterflow.schedules import Interval
    from iterflow.schedules.server import Server

    @task
    def shout(word):
        return word.upper()

    with Flow("local", schedules=[Interval(1, parameters={"word": "hey"})]) as flow:
        shout(Parameter("word"))
    lines: list[str] = []
    server = Server([(flow, None)], url, report=lines.append)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        run = wait_for(lambda: next((r for r in list_runs(store=url) if r.state == "Success"),
                                    None), what="a successful run")
    finally:
        server.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert run.parameters == {"word": "hey"} and run.source is None
    assert any("launched run" in line for line in lines)
