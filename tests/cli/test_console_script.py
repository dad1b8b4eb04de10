"""The real ``iterflow`` console script, in subprocesses: the paths a user takes.

Each test gets its own ``ITERFLOW_HOME`` (see ``conftest.py``), passed to the
subprocesses through their environment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.helpers import (
    ACCUMULATE,
    COMMAND,
    FAILING,
    FLAKY,
    FOREVER,
    needs_store,
    run_in_pty,
    strip_ansi,
)


def _runs(cli) -> list[dict]:
    result = cli("runs", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_python_dash_m_iterflow_works(env, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "iterflow", "--help"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0 and "run" in result.stdout and "resume" in result.stdout


def test_run_exits_0_and_output_is_plain_when_not_a_terminal(cli, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = cli("run", path, "-p", "n=3", "--no-store")
    assert result.returncode == 0, result.stderr
    assert "accumulate Success (4 iterations" in result.stdout
    assert "it/s" not in result.stdout and "\x1b[" not in result.stdout  # no live display


def test_a_failing_flow_exits_1_without_a_traceback(cli, flow_file):
    result = cli("run", flow_file("failing.py", FAILING), "--no-store")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: run ") and "ValueError: kaput" in result.stderr


def test_usage_errors_exit_2(cli, flow_file, tmp_path):
    assert cli("run", tmp_path / "missing.py").returncode == 2
    assert cli("run", flow_file("none.py", "x = 1\n")).returncode == 2
    two = flow_file(
        "two.py",
        """
        from iterflow import Flow, task

        @task
        def a():
            return 1

        with Flow("one") as first:
            a()
        with Flow("other") as second:
            a()
        """,
    )
    result = cli("run", two)
    assert result.returncode == 2 and "defines 2 flows" in result.stderr
    assert "Traceback" not in result.stderr


@needs_store
def test_run_then_runs_and_show(cli, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    assert cli("run", path, "-p", "n=4").returncode == 0
    [run] = _runs(cli)
    assert run["state"] == "Success" and run["flow_name"] == "looping accumulator"
    shown = json.loads(cli("show", run["run_id"][:8], "--json").stdout)
    loops = {t["task_name"]: t["loop_count"] for t in shown["task_runs"]}
    assert loops == {"n": 1, "accumulate": 5, "report": 1}


@needs_store
def test_resume_a_failed_run_without_running_finished_tasks_again(cli, flow_file, tmp_path):
    path = flow_file("flaky.py", FLAKY)
    first = cli("run", path)
    assert first.returncode == 1
    assert "flaky at iteration 3" in first.stderr and "iterflow resume" in first.stderr
    [run] = _runs(cli)
    assert run["state"] == "Failed"

    resumed = cli("resume", run["run_id"][:8])
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming flow 'flaky'" in resumed.stdout and "1 already finished" in resumed.stdout

    # `first` ran once in all; `looper` went on at the iteration that failed.
    assert (tmp_path / "first.log").read_text().splitlines() == ["ran"]
    assert (tmp_path / "iterations.log").read_text().split() == ["0", "1", "2", "3", "3", "4", "5"]
    [after] = _runs(cli)
    assert after["run_id"] == run["run_id"] and after["state"] == "Success"
    shown = json.loads(cli("show", run["run_id"], "--json").stdout)
    looper = next(t for t in shown["task_runs"] if t["task_name"] == "looper")
    assert looper["state"] == "Success" and looper["loop_count"] == 6


@needs_store
def test_a_killed_run_shows_as_crashed(cli, flow_file, env, tmp_path):
    path = flow_file("forever.py", FOREVER)
    proc = subprocess.Popen(
        [*COMMAND, "run", str(path)], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _runs(cli), what="the run to be recorded")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    [run] = _runs(cli)
    assert run["state"] == "Crashed"
    table = cli("runs").stdout
    assert "forever" in table and "Crashed" in table
    assert [r["run_id"] for r in json.loads(cli("runs", "--json", "--state", "crashed").stdout)] \
        == [run["run_id"]]


@needs_store
def test_sigterm_cancels_the_run_and_leaves_it_resumable(cli, flow_file, env, tmp_path):
    path = flow_file("forever.py", FOREVER)
    proc = subprocess.Popen(
        [*COMMAND, "run", str(path)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: _runs(cli), what="the run to be recorded")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "cancelled by SIGTERM" in err and "iterflow resume" in err
    [run] = _runs(cli)
    assert run["state"] == "Cancelled"


@needs_store
def test_logs_follow_prints_lines_until_the_run_ends(cli, flow_file, env, tmp_path):
    path = flow_file(
        "talk.py",
        """
        import time
        import iterflow
        from iterflow import task, Flow, LOOP

        @task
        def talk():
            i = iterflow.context.loop_index
            iterflow.context.logger.info("line %d", i)
            time.sleep(0.1)
            if i < 15:
                raise LOOP()
            return i

        with Flow("talk") as flow:
            talk()
        """,
    )
    proc = subprocess.Popen(
        [*COMMAND, "run", str(path), "-q"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        [run] = _wait_for(lambda: _runs(cli), what="the run to be recorded")
        followed = cli("logs", run["run_id"], "--follow", timeout=30)
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert followed.returncode == 0, followed.stderr
    lines = [line for line in followed.stdout.splitlines() if "talk #" in line]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(i) for i in range(16)]


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_live_progress_in_a_terminal_shows_the_iteration_and_rate(flow_file, env, tmp_path):
    path = flow_file(
        "slow_loop.py",
        """
        import time
        import iterflow
        from iterflow import task, Flow, LOOP

        @task
        def slow_loop():
            time.sleep(0.004)
            if iterflow.context.loop_index < 400:   # about 2 s: several redraws
                raise LOOP()
            return "done"

        with Flow("slow") as flow:
            slow_loop()
        """,
    )
    terminal = {**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    terminal.pop("NO_COLOR")
    code, raw = run_in_pty([*COMMAND, "run", str(path), "--no-store"], terminal, tmp_path)
    output = strip_ansi(raw)
    assert code == 0, output
    assert "\x1b[" in raw  # rich saw a terminal
    assert "iteration" in output and "it/s" in output  # the live table's columns
    # Iteration numbers of the running loop, as drawn in successive frames.
    assert "0/1 tasks finished, 1 running" in output
    assert "slow_loop Success (401 iterations" in output
