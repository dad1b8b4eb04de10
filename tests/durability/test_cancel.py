"""Cancellation (DESIGN §7.13): SIGTERM and Ctrl-C stop the run at the current iteration,
record it as ``Cancelled``, and leave it resumable like a failure."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.engine.runner import RunCancelled
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.store import iterations, list_runs, task_runs

from .helpers import kill, wait_for
from .test_kill_resume import COUNTING

N = 400


@pytest.mark.parametrize(
    ("signum", "why"),
    [(signal.SIGTERM, "cancelled by SIGTERM"), (signal.SIGINT, "cancelled by Ctrl-C")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_cancels_the_run_and_resume_finishes_it(flow_script, store_url, signum, why):
    if signum == signal.SIGINT and not store_url.startswith("sqlite"):
        pytest.skip("Ctrl-C differs from SIGTERM in the engine only: one store is enough")
    script = flow_script(COUNTING, store_url)
    proc = script.start("run", f"{{'n': {N}}}", DELAY="0.004")
    wait_for(lambda: len(script.side("started")) >= 30, "30 iterations", proc=proc, script=script)
    code = kill(proc, signum)
    assert code != 0, "the cancelled run's process exited as if it had succeeded"
    stderr = script.output(proc)[1]
    assert ("RunCancelled" if signum == signal.SIGTERM else "KeyboardInterrupt") in stderr

    first = [int(i) for i, _ in script.side("started")]
    assert first == list(range(len(first)))
    last = first[-1]
    (run,) = list_runs(store=store_url)
    assert (run.state, run.recorded_state, run.message) == ("Cancelled", "Cancelled", why)
    assert run.ended is not None

    out = script.run("resume", run.run_id, DELAY="0")
    assert out == {
        "run_id": run.run_id,
        "state": "Success",
        "results": {"n": N, "count": N * (N - 1) // 2},
    }
    second = [int(i) for i, _ in script.side("started")[len(first) :]]
    # Everything up to the interrupted iteration was committed when the run was
    # cancelled: at most that one iteration runs again.
    assert second == list(range(second[0], N))
    assert second[0] in (last, last + 1), (
        f"the run was cancelled in iteration {last} but resumed at {second[0]}"
    )
    assert [(r.run_id, r.state) for r in list_runs(store=store_url)] == [(run.run_id, "Success")]
    looped = [
        h.loop_index
        for h in iterations(run.run_id, "count", store=store_url)
        if h.state == "Looped"
    ]
    assert set(looped) == set(range(N - 1))


class Interrupter:
    """Sends SIGTERM to this process once a task says ``ready``; the task may then wait."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Never set ready: no signal (it would hit pytest itself after the run).
        if self.ready.wait(30):
            time.sleep(0.05)  # let the task reach its wait
            os.kill(os.getpid(), signal.SIGTERM)

    def stop_here(self) -> None:
        """Called by the task: the signal comes while it waits here."""
        self.ready.set()
        self.go.wait(10)

    def close(self) -> None:
        self.go.set()
        if self.ready.is_set():
            self.thread.join(5)


def looping_flow(interrupter: Interrupter, started: list[int], n: int = 10) -> Flow:
    @task
    def count(n):
        i = iterflow.context.loop_index
        started.append(i)
        if i == 5:
            interrupter.stop_here()
        if i < n - 1:
            raise LOOP(result=i)
        return i

    with Flow("cancelled") as flow:
        count(Parameter("n", default=n))
    return flow


EXECUTORS = {"local": LocalExecutor, "threads": lambda: ThreadExecutor(2)}


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_the_interrupted_task_run_is_recorded_as_cancelled(store_url, executor):
    interrupter = Interrupter()
    try:
        flow = looping_flow(interrupter, [])
        with pytest.raises(RunCancelled):
            flow.run(executor=EXECUTORS[executor](), store=store_url)
    finally:
        interrupter.close()
    (run,) = list_runs(store=store_url)
    assert run.state == "Cancelled"
    states = {t.task_name: (t.state, t.loop_count) for t in task_runs(run.run_id, store=store_url)}
    assert states["n"] == ("Success", 1)
    assert states["count"][0] == "Cancelled"
    assert states["count"][1] in (5, 6), "a cancelled task run that ran 6 iterations"


def test_cancel_stops_a_loop_on_a_worker_thread_without_a_store():
    interrupter = Interrupter()
    started: list[int] = []
    try:
        flow = looping_flow(interrupter, started, n=200)
        with pytest.raises(RunCancelled):
            flow.run(executor=ThreadExecutor(2), store=None)
    finally:
        interrupter.close()  # lets the worker go on, if nothing stopped it
    deadline = time.monotonic() + 0.5
    while len(started) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert max(started) <= 6, f"iterations up to {max(started)} ran after the run was cancelled"


def test_a_threads_job_stopping_after_the_runner_saw_the_cancel_leaves_the_run_cancelled(
        store_url, monkeypatch):
    """The runner sees the cancel flag first; the job on its thread stops during the grace
    period with RunCancelled of its own (iterflow.sleep's): the run still ends Cancelled,
    recorded (the job's exception once cut the run's end short: read as Crashed)."""
    from iterflow.errors import StoreError
    from iterflow.store import get_run, request_cancel

    monkeypatch.setenv("ITERFLOW_HEARTBEAT", "0.2")  # the request is read within a beat
    asleep = threading.Event()
    run_id = f"nap-{uuid.uuid4().hex[:8]}"

    @task
    def nap():
        asleep.set()
        try:
            iterflow.sleep(60)
        except RunCancelled:
            time.sleep(0.3)  # winding down: the runner's wait sees the flag before this ends
            raise

    with Flow("napping") as flow:
        nap()

    def cancel() -> None:
        if not asleep.wait(30):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                request_cancel(run_id, store=store_url)
                return
            except StoreError:  # its row is not committed yet
                time.sleep(0.05)

    canceller = threading.Thread(target=cancel, daemon=True)
    canceller.start()
    with pytest.raises(RunCancelled):
        flow.run(executor=ThreadExecutor(2), store=store_url, run_id=run_id)
    canceller.join(5)
    run = get_run(run_id, store=store_url)
    assert (run.state, run.recorded_state, run.message) == (
        "Cancelled", "Cancelled", "cancelled by iterflow cancel")
    assert [t.state for t in task_runs(run_id, store=store_url)] == ["Cancelled"]
