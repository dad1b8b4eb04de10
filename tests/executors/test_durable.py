"""Durable loop control on every executor, Dask included: idempotent run ids,
durable sleep across a resume, rewinding a loop to iteration K."""

from __future__ import annotations

import os
import time

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.store import iterations, open_store


@task
def carry(n):
    i = iterflow.context.loop_index
    value = iterflow.context.get("loop_result", 0) + 10
    if i < n - 1:
        raise LOOP(result=value)
    return value


def timed_sleep(seconds: float, flag: str) -> None:
    """``iterflow.sleep``, appending how long it took to a file beside ``flag``.

    Timed here, in the task (a Dask worker's process too), not around the whole
    resumed run: on a loaded machine the run's own start-up took a second.
    """
    before = time.monotonic()
    iterflow.sleep(seconds)
    with open(f"{flag}.slept", "a") as out:
        out.write(f"{time.monotonic() - before}\n")


def slept(flag) -> list[float]:
    """How long each timed_sleep took, in order."""
    return [float(line) for line in open(f"{flag}.slept").read().split()]


@task
def nap(flag):
    i = iterflow.context.loop_index
    timed_sleep(1.5, flag)
    if i == 1 and os.path.exists(flag):
        raise RuntimeError("failing after the sleep, once")
    if i < 1:
        raise LOOP(result=i)
    return i


def test_run_id_and_rewind(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("carrying") as flow:
        c = carry(Parameter("n", default=5))
    first = flow.run(executor=executor, store=url, run_id="nightly-1")
    assert first.result[c].result == 50
    again = flow.run(executor=executor, store=url, run_id="nightly-1")
    assert again.result[c].result == 50
    rewound = flow.run(executor=executor, store=url, resume="nightly-1", from_iteration=3)
    assert rewound.result[c].result == 50
    with open_store(url) as store:
        indexes = [r.loop_index for r in iterations("nightly-1", c.slug, store=store)]
    # Iterations 3 and 4 ran twice (the first ones kept, superseded); 0..2 once.
    assert sorted(indexes).count(3) == 2 and sorted(indexes).count(1) == 1


def test_sleep_already_done_is_not_waited_again_after_resume(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    flag = tmp_path / "fail"
    flag.write_text("")
    with Flow("napping") as flow:
        nap(str(flag))
    failed = flow.run(executor=executor, store=url)
    assert failed.is_failed()
    flag.unlink()
    state = flow.run(executor=executor, store=url, resume=failed.run_id)
    assert state.is_successful()
    # Iteration 1 runs again; its sleep's wake-up time has passed: no second 1.5 s.
    first_run, resumed = slept(flag)[:2], slept(flag)[2:]
    assert len(first_run) == 2 and min(first_run) >= 1.4  # each slept once, the whole time
    assert len(resumed) == 1 and resumed[0] < 1.0


@task
def body_nap(value, flag):
    timed_sleep(1.2, flag)
    if value == 1 and os.path.exists(flag):
        raise RuntimeError("failing after the sleep, once")
    return value + 1


@task
def past(value):
    return value >= 2


def test_sleep_inside_a_loop_block_is_durable(tmp_path, monkeypatch):
    from iterflow import loop

    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    flag = tmp_path / "fail"
    flag.write_text("")
    with Flow("block-napping") as flow, loop(initial=0, max_loops=5) as it:
        value = body_nap(it.result, str(flag))
        it.next(result=value, until=past(value))
    failed = flow.run(store=url)
    assert failed.is_failed()
    flag.unlink()
    state = flow.run(store=url, resume=failed.run_id)
    assert state.is_successful()
    # Block iteration 1 runs its task again, whose sleep is over: no second 1.2 s.
    first_run, resumed = slept(flag)[:2], slept(flag)[2:]
    assert len(first_run) == 2 and min(first_run) >= 1.1
    assert len(resumed) == 1 and resumed[0] < 1.0
