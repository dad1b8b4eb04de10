"""A worker lost for good, on a real cluster: `dask scheduler` and `dask worker` processes.

A worker is killed with SIGKILL right after a mapped child finished on it,
while it runs the next child. The run must end as it would have, and the
store must keep one history per task run: no child that finished gets a
later ``Running`` from a recomputed attempt, and the child that was running
continues at its last recorded iteration, which the run's log reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.core.state import Kind
from iterflow.events import TaskRunEvent
from iterflow.runtime import run_flow
from iterflow.signals import LOOP

distributed = pytest.importorskip("distributed")
from iterflow.executors import DaskExecutor  # noqa: E402  (needs distributed)

pytestmark = [pytest.mark.dask, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@task
def paced(item, iterations, pause):
    """Loops ``iterations`` times; returns its total and the pid of the worker it ended on."""
    time.sleep(pause)
    ctx = iterflow.context
    total = ctx.get("loop_result", 0) + ctx.loop_index
    if ctx.loop_index < iterations:
        raise LOOP(result=total)
    return total + item, os.getpid()


class Watcher:
    """A sink noting, per child, the pid its Success came from and the loops it runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished: dict[int, int] = {}  # map_index -> pid of its worker
        self.changed = threading.Condition(self.lock)

    def handle(self, event) -> None:
        if isinstance(event, TaskRunEvent) and event.state.kind is Kind.SUCCESS:
            result = event.state.result
            if event.map_index is not None and isinstance(result, tuple):
                with self.lock:
                    self.finished[event.map_index] = result[1]
                    self.changed.notify_all()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def real_cluster(tmp_path):
    """A scheduler and two single-threaded workers, each its own process (no nanny)."""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.skip("the dask command is not installed next to this Python")
    # The workers import the very iterflow this test runs, and this module (by reference).
    src = str(Path(iterflow.__file__).resolve().parents[1])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([src, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = tmp_path / "cluster.log"
    procs = []
    with open(logs, "w") as log:
        procs.append(subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"], env=env, stdout=log, stderr=log, cwd=ROOT,
        ))
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen(
                [str(dask), "worker", address, "--nthreads", "1", "--no-nanny",
                 "--no-dashboard", "--name", name], env=env, stdout=log, stderr=log, cwd=ROOT,
            ))
        try:
            with distributed.Client(address, timeout=30, set_as_default=False) as client:
                client.wait_for_workers(2, timeout=30)
            yield address
        finally:
            for proc in reversed(procs):  # workers first, then the scheduler
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_a_worker_lost_after_a_child_finished_on_it_rewrites_no_history(real_cluster, tmp_path):
    from iterflow.store import iterations, logs, task_runs

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    items = list(range(6))
    with Flow("lost worker") as flow:
        children = paced.map(items, iterations=iterflow.unmapped(30), pause=iterflow.unmapped(0.03))
    watcher = Watcher()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["state"] = run_flow(flow, executor=DaskExecutor(real_cluster), store=store,
                                        sinks=[watcher], run_id="lost-worker")
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    with watcher.lock:
        watcher.changed.wait_for(lambda: watcher.finished, timeout=60)
        assert watcher.finished, f"nothing finished: {outcome}"
        victim = next(iter(watcher.finished.values()))
    time.sleep(0.3)  # it has moved on to its next child, some iterations in
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=120)
    assert not runner.is_alive(), "the run did not end after the worker was lost"
    assert "error" not in outcome, outcome.get("error")

    state = outcome["state"]
    assert state.is_successful()
    expected = [sum(range(31)) + item for item in items]
    assert [value for value, _pid in state.result[children].result] == expected
    recorded = {info.map_index: info for info in task_runs("lost-worker", store=store)}
    for index in items:
        info = recorded[index]
        assert (info.state, info.loop_count) == ("Success", 31), (index, info)
        history = iterations("lost-worker", paced.name, index, store=store)
        assert history[-1].state == "Success", (index, [(h.state, h.loop_index) for h in history])
    lost = [entry.message for entry in logs("lost-worker", store=store)
            if "worker lost" in entry.message]
    assert lost, "the run's log does not say that a worker was lost"
    assert all("resumed at iteration" in message for message in lost), lost
