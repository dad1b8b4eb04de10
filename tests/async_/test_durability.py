"""Async tasks with the run store: every iteration recorded, a killed run resumed, and
Ctrl-C / SIGTERM during an ``await`` (DESIGN §7.10, §7.13) — real processes, real SQLite."""

from __future__ import annotations

import os
import signal
import time

import pytest

from iterflow.store import iterations, list_runs, task_runs
from tests.durability.helpers import FlowScript, kill, wait_for

COUNTING = """
import asyncio


@task(checkpoint=os.environ.get("CHECKPOINT") or None)
async def count(n):
    i = iterflow.context.loop_index
    mark("started", i)
    await asyncio.sleep(float(os.environ.get("DELAY", "0")))
    total = iterflow.context.get("loop_result", 0) + i
    if i < n - 1:
        raise LOOP(result=total)
    return total


with Flow("async counting") as flow:
    count(Parameter("n"))
"""

# At iteration 3 each child awaits a long sleep (unless RESUMED): the signal comes then.
WAITING = """
import asyncio


@task
async def poll(job):
    i = iterflow.context.loop_index
    mark(f"started-{job}", i)
    if i == 3 and not os.environ.get("RESUMED"):
        mark("waiting", job)
        await asyncio.sleep(60)
    await asyncio.sleep(0.01)
    if i < 5:
        raise LOOP(result=i)
    return job * 100 + i


with Flow("async waiting") as flow:
    poll.map([0, 1, 2])
"""


@pytest.fixture
def script(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ITERFLOW_HOME", str(home))
    made: list[FlowScript] = []

    def make(body: str) -> FlowScript:
        env = {**os.environ, "ITERFLOW_HOME": str(home)}
        made.append(FlowScript(tmp_path / f"flow{len(made)}", body, env))
        return made[-1]

    make.store = f"sqlite:///{home / 'iterflow.db'}"
    try:
        yield make
    finally:
        for s in made:
            s.kill_all()


@pytest.mark.parametrize("checkpoint", ["", "every"], ids=["batched", "every"])
def test_a_killed_async_loop_resumes_at_its_last_recorded_iteration(script, checkpoint):
    flow = script(COUNTING)
    n = 300
    proc = flow.start("run", f"{{'n': {n}}}", DELAY="0.005", CHECKPOINT=checkpoint)
    wait_for(lambda: len(flow.side("started")) >= 40, "40 iterations", proc=proc, script=flow)
    time.sleep(0.2)
    kill(proc)
    first = [int(i) for (i,) in flow.side("started")]
    (run,) = list_runs(store=script.store)
    out = flow.run("resume", run.run_id, DELAY="0", CHECKPOINT=checkpoint)
    assert out["state"] == "Success" and out["results"] == {"n": n, "count": n * (n - 1) // 2}
    second = [int(i) for (i,) in flow.side("started")[len(first):]]
    assert second == list(range(second[0], n))
    assert 0 < second[0] <= first[-1] + 1, "the resumed loop did not continue where it was"
    if checkpoint == "every":
        assert second[0] >= first[-1], "with checkpoint='every' at most one iteration re-runs"
    looped = [h.loop_index for h in iterations(run.run_id, "count", store=script.store)
              if h.state == "Looped"]
    assert sorted(set(looped)) == list(range(n - 1))


@pytest.mark.parametrize(
    ("signum", "why"),
    [(signal.SIGINT, "cancelled by Ctrl-C"), (signal.SIGTERM, "cancelled by SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_during_an_await_stops_promptly_and_records_cancelled(script, signum, why):
    flow = script(WAITING)
    proc = flow.start("run")
    wait_for(lambda: len(flow.side("waiting")) == 3, "all three children waiting",
             proc=proc, script=flow)
    sent = time.time()
    code = kill(proc, signum)
    assert code != 0
    (run,) = list_runs(store=script.store)
    assert (run.state, run.message) == ("Cancelled", why)
    # Promptly: the run ended well before the 60 s await, and before the grace period
    # the runner gives a sync loop to reach its next iteration (2 s).
    assert run.ended - sent < 1.0, f"the run ended {run.ended - sent:.1f} s after the signal"
    children = {t.map_index: (t.state, t.loop_count)
                for t in task_runs(run.run_id, store=script.store) if t.map_index is not None}
    assert children == {0: ("Cancelled", 4), 1: ("Cancelled", 4), 2: ("Cancelled", 4)}

    out = flow.run("resume", run.run_id, RESUMED="1")
    assert out["state"] == "Success"
    assert out["results"]["poll"] == [5, 105, 205]
    for job in range(3):
        again = [int(i) for (i,) in flow.side(f"started-{job}")][4:]
        assert again == [3, 4, 5], "the resumed children go on at the interrupted iteration"


IN_A_RUNNING_LOOP = """
import asyncio


@task
async def poll(job):
    mark("started", job, iterflow.context.loop_index)
    if iterflow.context.loop_index == 2:
        mark("waiting", job)
        await asyncio.sleep(60)
    raise LOOP()


with Flow("inside a loop") as flow:
    poll.map([0, 1])


async def app():
    flow.run()  # inside a running event loop: the run goes on a worker thread


if __name__ == "__main__" and sys.argv[1] == "app":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    asyncio.run(app())
    sys.exit(0)
"""


@pytest.mark.parametrize(
    ("signum", "why", "raised"),
    [(signal.SIGINT, "cancelled by Ctrl-C", "KeyboardInterrupt"),
     (signal.SIGTERM, "cancelled by SIGTERM", "RunCancelled: cancelled by SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_a_flow_run_called_inside_a_running_loop(script, signum, why, raised):
    """flow.run() inside asyncio.run: the run is on a worker thread, and Ctrl-C (which
    asyncio alone would hold back until the run ended) or SIGTERM still stops it."""
    flow = script(IN_A_RUNNING_LOOP)
    proc = flow.start("app")
    wait_for(lambda: len(flow.side("waiting")) == 2, "both children waiting", proc=proc,
             script=flow)
    sent = time.time()
    assert kill(proc, signum) != 0
    assert raised in flow.output(proc)[1]
    (run,) = list_runs(store=script.store)
    assert (run.state, run.message) == ("Cancelled", why)
    assert run.ended - sent < 1.0
    children = {t.map_index: (t.state, t.loop_count)
                for t in task_runs(run.run_id, store=script.store) if t.map_index is not None}
    assert children == {0: ("Cancelled", 3), 1: ("Cancelled", 3)}


def test_cancelling_the_task_awaiting_run_async_cancels_the_run(tmp_path):
    import asyncio

    import iterflow
    from iterflow import LOOP, Flow, task

    url = f"sqlite:///{tmp_path / 'store.db'}"
    reached = []

    @task
    async def slow():
        reached.append(iterflow.context.loop_index)
        if iterflow.context.loop_index == 1:
            await asyncio.sleep(60)
        raise LOOP()

    with Flow("given up") as flow:
        slow()

    async def main():
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flow.run_async(store=url), timeout=0.5)
        return time.monotonic() - started

    assert asyncio.run(main()) < 2.0
    (run,) = list_runs(store=url)
    assert (run.state, run.message) == ("Cancelled", "cancelled")
    (info,) = task_runs(run.run_id, store=url)
    assert (info.state, info.loop_count) == ("Cancelled", 2)
    assert reached == [0, 1]
