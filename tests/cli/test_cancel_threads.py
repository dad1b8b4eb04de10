"""Ctrl-C and SIGTERM with ``--executor threads`` while a task is inside a long call.

The thread running the task cannot be stopped: the process must exit anyway
(promptly, not when the task ends), name what it left running, record the run
Cancelled, and print nothing about that task after the cancellation.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.cli.helpers import COMMAND, needs_store

SLOW = """
    import os
    import time
    from pathlib import Path
    from iterflow import task, Flow

    @task
    def download():
        Path(os.environ["READY"]).touch()  # the test signals once this exists
        time.sleep(60)
        return 1

    @task
    def quick():
        return 2

    with Flow("slow download") as flow:
        download()
        quick()
"""


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before it runs: a suite started without job control (``make test &``)
    hands its processes SIGINT ignored, and the run would then never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_file(path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (the task is inside its long call); fail if ``proc`` ends."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before its task started"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


@contextlib.contextmanager
def _slow_run_inside_its_download(flow_file, env, tmp_path) -> Iterator[subprocess.Popen]:
    """``iterflow run`` of SLOW on threads, once its download is inside its long call.

    Not a fixed pause: on a loaded machine the task may not have started by then,
    and a run cancelled before it starts has no thread left running to name.
    The process is reaped on the way out, not left to warn in the next test.
    """
    path = flow_file("slow.py", SLOW)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [*COMMAND, "run", str(path), "--executor", "threads"], env={**env, "READY": str(ready)},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    try:
        assert proc.stdout.readline().startswith("Running flow 'slow download'")
        _wait_for_file(ready, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _output(proc: subprocess.Popen) -> tuple[str, str]:
    """What the run prints until it exits; a failure naming it if that takes over 30 s."""
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the run did not exit within 30 s of the signal\n--- stdout ---\n{out}"
                    f"\n--- stderr ---\n{err}")


@needs_store
@pytest.mark.parametrize(("signum", "code", "why"), [
    (signal.SIGTERM, 143, "cancelled by SIGTERM"),
    (signal.SIGINT, 130, "cancelled (Ctrl-C)"),
])
def test_a_signal_ends_a_threads_run_at_once_and_nothing_is_printed_after(
    cli, flow_file, env, tmp_path, signum, code, why
):
    with _slow_run_inside_its_download(flow_file, env, tmp_path) as proc:
        proc.send_signal(signum)
        sent = time.monotonic()
        out, err = _output(proc)
        took = time.monotonic() - sent
    # Every check names what the process printed: a failure on a loaded machine is
    # then read from the report, not guessed at.
    printed = f"took {took:.1f} s\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    assert proc.returncode == code, printed
    # The runner gives loops a moment (CANCEL_GRACE) to stop at their next iteration;
    # the task's 60 s sleep is not waited for.
    assert took < 15, printed
    assert "download Success" not in out and "closed" not in out + err, printed
    assert out.rstrip().splitlines()[-1].startswith("Flow 'slow download' finished Cancelled"), \
        printed
    assert "still running on a thread that cannot be stopped" in out and "/download" in out, \
        printed
    assert why in err, printed
    [run] = json.loads(cli("runs", "--json").stdout)
    assert run["state"] == "Cancelled", (run, printed)
    shown = json.loads(cli("show", run["run_id"], "--json").stdout)
    states = {t["task_name"]: t["state"] for t in shown["task_runs"]}
    assert states["download"] == "Cancelled", (shown, printed)


@needs_store
def test_a_second_ctrl_c_cuts_the_wait_for_loops_short_and_the_run_still_ends_cancelled(
    cli, flow_file, env, tmp_path
):
    # After a Ctrl-C the runner gives loops on other threads a moment to stop; a user who
    # presses Ctrl-C again will not wait for it. Its exception used to cut the run's own
    # end short too: the run was left unfinished, read as Crashed once the process was gone.
    with _slow_run_inside_its_download(flow_file, env, tmp_path) as proc:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)  # well inside the moment given to loops (CANCEL_GRACE, 2 s)
        proc.send_signal(signal.SIGINT)
        out, err = _output(proc)
    printed = f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
    assert proc.returncode == 130, printed
    assert "Traceback" not in err, printed
    assert out.rstrip().splitlines()[-1].startswith("Flow 'slow download' finished Cancelled"), \
        printed
    [run] = json.loads(cli("runs", "--json").stdout)
    assert run["state"] == "Cancelled", (run, printed)
    shown = json.loads(cli("show", run["run_id"], "--json").stdout)
    assert {t["task_name"]: t["state"] for t in shown["task_runs"]}["download"] == "Cancelled"
