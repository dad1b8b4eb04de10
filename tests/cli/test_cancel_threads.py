"""Ctrl-C and SIGTERM with ``--executor threads`` while a task is inside a long call.

The thread running the task cannot be stopped: the process must exit anyway
(promptly, not when the task ends), name what it left running, record the run
Cancelled, and print nothing about that task after the cancellation.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.cli.helpers import COMMAND, needs_store

SLOW = """
    import time
    from iterflow import task, Flow

    @task
    def download():
        time.sleep(60)
        return 1

    @task
    def quick():
        return 2

    with Flow("slow download") as flow:
        download()
        quick()
"""


@needs_store
@pytest.mark.parametrize(("signum", "code", "why"), [
    (signal.SIGTERM, 143, "cancelled by SIGTERM"),
    (signal.SIGINT, 130, "cancelled (Ctrl-C)"),
])
def test_a_signal_ends_a_threads_run_at_once_and_nothing_is_printed_after(
    cli, flow_file, env, tmp_path, signum, code, why
):
    path = flow_file("slow.py", SLOW)
    proc = subprocess.Popen(
        [*COMMAND, "run", str(path), "--executor", "threads"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("Running flow 'slow download'")
        time.sleep(0.5)  # download() is inside its sleep now
        proc.send_signal(signum)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == code, err
    # The runner gives loops a moment (CANCEL_GRACE) to stop at their next iteration;
    # the task's 60 s sleep is not waited for.
    assert took < 15, f"the process took {took:.1f} s to exit"
    assert "download Success" not in out and "closed" not in out + err, (out, err)
    assert out.rstrip().splitlines()[-1].startswith("Flow 'slow download' finished Cancelled")
    assert "still running on a thread that cannot be stopped" in out and "/download" in out
    assert why in err
    [run] = json.loads(cli("runs", "--json").stdout)
    assert run["state"] == "Cancelled"
    shown = json.loads(cli("show", run["run_id"], "--json").stdout)
    states = {t["task_name"]: t["state"] for t in shown["task_runs"]}
    assert states["download"] == "Cancelled"
