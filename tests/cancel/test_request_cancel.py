"""``iterflow cancel RUN`` from another process, on a run driven by a real subprocess.

The driving process reads the request with its heartbeat (``ITERFLOW_HEARTBEAT``
seconds here) and cancels as Ctrl-C does: the loop stops at its next
iteration, the run ends ``Cancelled`` within two heartbeats, and ``iterflow
resume`` continues it. On Local, Threads and Dask (one LocalCluster per module).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from iterflow.errors import StoreError
from iterflow.store import get_run, iterations, open_store, request_cancel, task_runs

LOOPER = Path(__file__).with_name("looper.py")
HEARTBEAT = 2.0  # seconds; Dask adds about a second of its own (cancel round trip)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture
def store_url(tmp_path, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("ITERFLOW_STORE_URL", url)
    return url


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, ITERFLOW_HEARTBEAT=str(HEARTBEAT), NO_COLOR="1", **extra)


def start_looper(run_id: str, kind: str, address: str | None = None,
                 **extra: str) -> subprocess.Popen:
    args = [sys.executable, str(LOOPER), run_id, kind, *([address] if address else [])]
    return subprocess.Popen(args, env=_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(check, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the looper exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def looped(url: str, run_id: str, n: int) -> bool:
    try:
        return len(iterations(run_id, "count", store=url)) >= n
    except StoreError:
        return False


def state(url: str, run_id: str) -> str:
    return get_run(run_id, store=url).state


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iterflow", *args], env=_env(**extra),
                          capture_output=True, text=True, timeout=120)


def cancel_and_time(url: str, run_id: str, proc: subprocess.Popen) -> float:
    """Run ``iterflow cancel`` in its own process; seconds from its answer to Cancelled."""
    done = cli("cancel", run_id[:10])
    assert done.returncode == 0, done.stderr
    assert "Cancel requested" in done.stdout
    asked = time.monotonic()
    wait_for(lambda: state(url, run_id) == "Cancelled", "the run to be Cancelled", proc=None)
    took = time.monotonic() - asked
    proc.wait(timeout=60)
    return took


def cancel_after_three(url: str, run_id: str, proc: subprocess.Popen, check=None) -> float:
    """Once three iterations are recorded (and ``check()`` holds), cancel; see cancel_and_time."""
    try:
        wait_for(lambda: looped(url, run_id, 3), "three iterations", proc=proc)
        if check is not None:
            assert check(), f"{check} did not hold while the loop ran"
        return cancel_and_time(url, run_id, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", ["local", "threads", pytest.param("dask", marks=pytest.mark.dask)])
def test_cancel_from_another_process_stops_the_loop_and_the_run_resumes(
        kind, store_url, request):
    address = request.getfixturevalue("dask_cluster").scheduler_address if kind == "dask" \
        else None
    run_id = f"cancel-{kind}-{uuid.uuid4().hex[:8]}"
    proc = start_looper(run_id, kind, address, LOOPER_ITERATIONS="60", LOOPER_PAUSE="0.1")
    took = cancel_after_three(store_url, run_id, proc)
    # Within two heartbeats of the request (the writer's next beat reads it).
    assert took <= 2 * HEARTBEAT, f"{took:.2f}s from request to Cancelled"
    assert proc.returncode != 0  # the run was cancelled, as by Ctrl-C
    recorded = len(iterations(run_id, "count", store=store_url))
    assert 3 <= recorded < 60
    # A cancelled run stays resumable; the old request does not cancel the resume.
    resumed = cli("resume", run_id, LOOPER_ITERATIONS="60", LOOPER_PAUSE="0")
    assert resumed.returncode == 0, resumed.stderr
    assert state(store_url, run_id) == "Success"
    indexes = [it.loop_index for it in iterations(run_id, "count", store=store_url)]
    assert indexes[-1] == 59
    assert len(set(indexes)) == 60  # each iteration once: it continued, not restarted


def _writer_processes_of(pid: int) -> list[int]:
    """Pids of the store writer processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"writer_child" in cmdline:
            found.append(int(entry.name))
    return found


def test_cancel_reaches_a_run_whose_batches_the_writer_process_commits(store_url):
    # The writer process reads the request with the heartbeat and tells the
    # driving process, which cancels as it does with the writer thread.
    run_id = f"cancel-process-{uuid.uuid4().hex[:8]}"
    proc = start_looper(run_id, "local", LOOPER_ITERATIONS="60", LOOPER_PAUSE="0.1",
                        ITERFLOW_WRITER="process")
    took = cancel_after_three(store_url, run_id, proc, check=lambda: _writer_processes_of(
        proc.pid))
    assert took <= 2 * HEARTBEAT, f"{took:.2f}s from request to Cancelled"
    assert proc.returncode != 0
    assert get_run(run_id, store=store_url).pid == proc.pid
    assert 3 <= len(iterations(run_id, "count", store=store_url)) < 60


@pytest.mark.parametrize("kind", ["local", "threads", pytest.param("dask", marks=pytest.mark.dask)])
def test_cancel_interrupts_a_durable_sleep(kind, store_url, request):
    address = request.getfixturevalue("dask_cluster").scheduler_address if kind == "dask" \
        else None
    run_id = f"sleep-{kind}-{uuid.uuid4().hex[:8]}"
    proc = start_looper(run_id, kind, address, LOOPER_ITERATIONS="3", LOOPER_SLEEP="600")
    try:
        wait_for(lambda: _sleeping(store_url, run_id), "the task to sleep", proc=proc)
        took = cancel_and_time(store_url, run_id, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took <= 2 * HEARTBEAT, f"{took:.2f}s from request to Cancelled"
    tasks = {t.task_name: t.state for t in open_store(store_url).task_runs(run_id)}
    assert tasks == {"count": "Cancelled"}


def _sleeping(url: str, run_id: str) -> bool:
    from iterflow.store import logs

    try:
        return any("sleeping until" in line.message for line in logs(run_id, store=url))
    except StoreError:
        return False


def test_a_dead_run_is_marked_cancelled_at_once(store_url):
    run_id = f"dead-{uuid.uuid4().hex[:8]}"
    proc = start_looper(run_id, "local")
    wait_for(lambda: looped(store_url, run_id, 2), "two iterations", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert state(store_url, run_id) == "Crashed"  # recorded Running, its process gone
    assert request_cancel(run_id, store=store_url) == "cancelled"
    run = get_run(run_id, store=store_url)
    assert (run.state, run.recorded_state) == ("Cancelled", "Cancelled")
    # Its task run is closed too, and the history ends as a Ctrl-C'd run's does ...
    (count,) = task_runs(run_id, store=store_url)
    assert count.state == "Cancelled"
    # ... so a resume continues the loop where it was, each iteration once.
    done = len(iterations(run_id, "count", store=store_url))
    resumed = cli("resume", run_id, LOOPER_ITERATIONS="20", LOOPER_PAUSE="0")
    assert resumed.returncode == 0, resumed.stderr
    assert state(store_url, run_id) == "Success"
    indexes = [it.loop_index for it in iterations(run_id, "count", store=store_url)
               if it.state != "Cancelled"]
    assert indexes == sorted(set(indexes)) and indexes[-1] == 19 and done >= 2


def test_unknown_and_finished_runs_are_refused(store_url):
    done = cli("cancel", "no-such-run")
    assert done.returncode == 1
    assert "No run 'no-such-run'" in done.stderr
    run_id = f"short-{uuid.uuid4().hex[:8]}"
    proc = start_looper(run_id, "local", LOOPER_ITERATIONS="2", LOOPER_PAUSE="0")
    proc.communicate(timeout=120)
    assert state(store_url, run_id) == "Success"
    done = cli("cancel", run_id)
    assert done.returncode == 1
    assert "already finished (Success)" in done.stderr
    with pytest.raises(StoreError, match="nothing to cancel"):
        request_cancel(run_id, store=store_url)


SLOW = """
import sys, time
from pathlib import Path
from iterflow import Flow, task
from iterflow.executors import ThreadExecutor

@task
def download():
    Path(sys.argv[1], "ready").touch()
    time.sleep(60)
    return 1

with Flow("slow download") as flow:
    download()

flow.run(executor=ThreadExecutor(), run_id=sys.argv[2])
"""


def test_cancel_reaches_a_threads_run_whose_task_is_inside_a_long_call(store_url, tmp_path):
    # No loop to stop at: the run still ends Cancelled (its thread is left, as on SIGTERM).
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    run_id = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), run_id], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "ready").exists(), "the task to start", proc=proc)
        took = cancel_and_time(store_url, run_id, proc)
    finally:
        proc.kill()
    assert took <= 2 * HEARTBEAT + 1.0  # not the task's 60 s
    assert state(store_url, run_id) == "Cancelled"
