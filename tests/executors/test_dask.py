"""DaskExecutor beyond the shared contract: its own cluster, events, bad input, lost workers."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import iterflow
from iterflow import Flow, task
from iterflow.core.state import Kind
from iterflow.errors import ExecutorError
from iterflow.events import TaskRunEvent
from iterflow.runtime import run_flow
from iterflow.signals import LOOP

distributed = pytest.importorskip("distributed")
from iterflow.executors import DaskExecutor  # noqa: E402  (needs distributed)

pytestmark = pytest.mark.dask


class Recorder:
    """A thread-safe event sink that notes when each event reached the client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list = []
        self.arrived: list[float] = []
        self.changed = threading.Condition(self.lock)

    def handle(self, event) -> None:
        with self.lock:
            self.events.append(event)
            self.arrived.append(time.time())
            self.changed.notify_all()

    def states(self, slug: str) -> list:
        with self.lock:
            return [e.state for e in self.events
                    if isinstance(e, TaskRunEvent) and e.task_slug == slug]

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.lock:
            return self.changed.wait_for(lambda: predicate(self.events), timeout)


@task
def accumulate(x, iterations):
    result = x + iterflow.context.get("loop_result", 0)
    if iterflow.context.loop_index < iterations:
        raise LOOP(result=result)
    return result


@task
def inc(x):
    return x + 1


@task
def boom_once():
    raise ValueError("boom")


@task
def grow(n):
    """Loops on one list, mutated in place on every iteration."""
    items = iterflow.context.get("loop_result", [])
    items.append(iterflow.context.loop_index)
    if iterflow.context.loop_index < n:
        raise LOOP(result=items)
    return items


@task
def make_lock():
    return threading.Lock()


@task
def lock_on_second_iteration():
    if iterflow.context.loop_index == 0:
        raise LOOP(result=1)
    if iterflow.context.loop_index == 1:
        raise LOOP(result=threading.Lock())
    return "unreachable"


@task
def slow_sum(iterations, pause):
    time.sleep(pause)
    total = iterflow.context.get("loop_result", 0) + iterflow.context.loop_index
    if iterflow.context.loop_index < iterations:
        raise LOOP(result=total)
    return total


@pytest.fixture
def dask_executor(dask_cluster):
    return DaskExecutor(address=dask_cluster.scheduler_address)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- life cycle ----------------------------------------------------------------------------
def test_starts_and_closes_its_own_local_cluster():
    with Flow("own cluster") as flow:
        y = accumulate(x=1, iterations=3)
    before = {p.pid for p in multiprocessing.active_children()}
    executor = DaskExecutor(n_workers=1)

    state = flow.run(executor=executor, store=None)

    assert state.result[y].result == 4
    deadline = time.monotonic() + 10
    while {p.pid for p in multiprocessing.active_children()} - before:
        assert time.monotonic() < deadline, "the cluster's worker processes are still running"
        time.sleep(0.1)


def test_joins_a_cluster_and_leaves_it_running(dask_cluster, dask_executor):
    with Flow("join") as flow:
        y = accumulate(x=1, iterations=2)

    assert flow.run(executor=dask_executor, store=None).result[y].result == 3

    with distributed.Client(dask_cluster, set_as_default=False) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_accepts_an_existing_client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        with Flow("client") as flow:
            y = accumulate(x=1, iterations=2)
        executor = DaskExecutor(client=client)
        assert flow.run(executor=executor, store=None).result[y].result == 3
        assert client.status == "running"  # ours to close, not the executor's
        assert repr(executor) == f"DaskExecutor(address={client.scheduler.address!r})"


def test_repr_and_argument_checks():
    assert repr(DaskExecutor("tcp://10.0.0.5:8786")) == "DaskExecutor(address='tcp://10.0.0.5:8786')"
    assert repr(DaskExecutor(n_workers=2)) == "DaskExecutor(n_workers=2)"
    assert repr(DaskExecutor()) == "DaskExecutor()"
    with pytest.raises(ValueError, match="n_workers"):
        DaskExecutor("tcp://10.0.0.5:8786", n_workers=2)


# -- events --------------------------------------------------------------------------------
def test_events_reach_the_client_while_the_loop_runs(dask_executor):
    recorder = Recorder()
    with Flow("live") as flow:
        y = slow_sum(iterations=9, pause=0.1)

    state = run_flow(flow, executor=dask_executor, store=None, sinks=[recorder])

    assert state.result[y].result == 45
    first_looped = next(
        i for i, e in enumerate(recorder.events)
        if isinstance(e, TaskRunEvent) and e.state.kind is Kind.LOOPED
    )
    # Looped(0) reached the client before the worker had even made the final state.
    assert recorder.arrived[first_looped] < state.result[y].timestamp


def test_a_mutated_loop_result_is_recorded_as_it_was_when_looped(dask_executor):
    recorder = Recorder()
    with Flow("snapshots") as flow:
        g = grow(3)

    state = run_flow(flow, executor=dask_executor, store=None, sinks=[recorder])

    assert state.result[g].result == [0, 1, 2, 3]
    looped = [s.result for s in recorder.states(g.slug) if s.kind is Kind.LOOPED]
    assert looped == [[0], [0, 1], [0, 1, 2]]


@task(serializer="json")
def loops_over_sets():
    i = iterflow.context.loop_index
    if i < 3:
        raise LOOP(result={i} if i == 1 else i)  # a set is not JSON
    return "done"


@task(serializer="json")
def returns_a_set():
    return {1, 2}


def run_unrecordable(executor, tmp_path, task_):
    """Run ``task_`` alone on Dask with a store; return its failed state, checked as recorded."""
    from iterflow.store import task_runs

    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Flow("json on dask") as flow:
        t = task_()
    state = run_flow(flow, executor=executor, store=url)
    assert state.is_failed()
    failed = state.result[t]
    assert failed.is_failed() and f"'{task_.name}'" in failed.message and "set" in failed.message
    (info,) = task_runs(state.run_id, store=url)
    assert (info.state, info.message) == ("Failed", failed.message)
    return state, failed, url


def test_a_loop_result_the_store_cannot_record_fails_the_task_run_on_dask_too(
    dask_executor, tmp_path
):
    # On a worker the loop goes on; the client's store sink refuses the result, and the
    # task run's final state says so, as it would in-process (DESIGN 7.11).
    from iterflow.store import iterations

    state, failed, url = run_unrecordable(dask_executor, tmp_path, loops_over_sets)
    assert "iteration 1" in failed.message
    history = iterations(state.run_id, "loops_over_sets", store=url)
    assert [(h.state, h.loop_index) for h in history] == [
        ("Looped", 0), ("Looped", 2), ("Failed", 3),
    ]


def test_a_final_result_the_store_cannot_record_fails_the_task_run_on_dask(
    dask_executor, tmp_path
):
    run_unrecordable(dask_executor, tmp_path, returns_a_set)


@task
def weigh(item, table):
    """Uses the run's parameters (through the context) and a big unmapped input."""
    return item + len(table) + len(iterflow.context.parameters["big"])


def test_big_shared_values_are_sent_to_the_workers_once(dask_executor, monkeypatch):
    scattered = []
    original = distributed.Client.scatter

    def counting_scatter(self, data, *args, **kwargs):
        scattered.append(type(pickle.loads(pickle.dumps(data[0])).value()).__name__)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "scatter", counting_scatter)
    table = list(range(20_000))
    with Flow("shared") as flow:
        big = iterflow.Parameter("big")
        w = weigh.map(list(range(30)), iterflow.unmapped(table))
        flow.add_task(big)

    state = flow.run(parameters={"big": list(range(30_000))}, executor=dask_executor, store=None)

    assert state.result[w].result == [i + 50_000 for i in range(30)]
    # once each for the whole map: the run's context (which holds the parameters) and the table
    assert sorted(scattered) == ["dict", "list"]


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [f"tcp://127.0.0.1:{free_port()}", "tcp://no-such-host.invalid:8786", "tcp://[::1"],
)
def test_unreachable_address_fails_fast_and_clearly(address):
    with Flow("nowhere") as flow:
        inc(1)
    started = time.monotonic()

    with pytest.raises(ExecutorError) as caught:
        flow.run(executor=DaskExecutor(address), store=None)

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert repr(address) in message
    assert "dask scheduler" in message


def test_an_unreachable_scheduler_leaves_no_run_behind(tmp_path):
    """The executor connects before the run is recorded: no Running run turns Crashed later."""
    from iterflow.store import get_run, list_runs

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    address = f"tcp://127.0.0.1:{free_port()}"
    with Flow("nowhere recorded") as flow:
        b = boom_once()
    with pytest.raises(ExecutorError, match="could not reach"):
        flow.run(executor=DaskExecutor(address), store=url)
    assert list_runs(store=url) == []

    # A failed run resumed on a cluster it cannot reach stays as it was, resumable.
    failed = flow.run(store=url)
    assert failed.result[b].is_failed()
    with pytest.raises(ExecutorError, match="could not reach"):
        flow.run(executor=DaskExecutor(address), store=url, resume=failed.run_id)
    info = get_run(failed.run_id, store=url)
    assert info.state == "Failed"
    assert [run.run_id for run in list_runs(store=url)] == [failed.run_id]


def test_address_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections, says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        with Flow("silence") as flow:
            inc(1)
        started = time.monotonic()

        with pytest.raises(ExecutorError, match="no answer within 1 s"):
            flow.run(executor=DaskExecutor(address, connect_timeout=1), store=None)

        assert time.monotonic() - started < 4


def test_unpicklable_task_function_fails_that_task_only(dask_executor):
    lock = threading.Lock()

    @task
    def guarded(x):
        with lock:
            return x

    with Flow("unpicklable function") as flow:
        g = guarded(1)
        ok = inc(1)

    state = flow.run(executor=dask_executor, store=None)

    assert state.result[g].is_failed()
    message = state.result[g].message
    assert "'guarded'" in message
    assert "cannot pickle '_thread.lock' object" in message
    assert "LocalExecutor or ThreadExecutor" in message
    assert state.result[ok].result == 2


def test_unpicklable_shared_input_fails_the_task_naming_the_input(dask_executor):
    table = [threading.Lock(), *range(20_000)]  # big, so sent to the workers once
    with Flow("unpicklable input") as flow:
        w = weigh.map(list(range(3)), iterflow.unmapped(table))

    state = flow.run(executor=dask_executor, store=None)

    assert state.result[w].is_failed()
    message = state.result[w].map_states[0].message
    assert "'weigh'" in message
    assert "the value of 'table' in its inputs" in message
    assert "cannot pickle '_thread.lock' object" in message


@pytest.mark.parametrize("with_sink", [False, True])
def test_unpicklable_result_fails_the_task_clearly(dask_executor, with_sink):
    with Flow("unpicklable result") as flow:
        m = make_lock()

    state = run_flow(flow, executor=dask_executor, store=None,
                     sinks=[Recorder()] if with_sink else None)

    final = state.result[m]
    assert final.is_failed()
    assert "'make_lock'" in final.message
    assert "_thread.lock" in final.message
    assert "cannot be pickled" in final.message


def test_unpicklable_loop_result_names_task_iteration_and_type(dask_executor):
    recorder = Recorder()
    with Flow("unpicklable loop result") as flow:
        t = lock_on_second_iteration()

    state = run_flow(flow, executor=dask_executor, store=None, sinks=[recorder])

    final = state.result[t]
    assert final.is_failed()
    assert "'lock_on_second_iteration'" in final.message
    assert "iteration 1" in final.message
    assert "_thread.lock" in final.message
    assert recorder.states(t.slug)[-1] is final


# -- cancelling ---------------------------------------------------------------------------------
@task(max_loops=100)
def count_for_a_while(path):
    Path(path).write_text(str(iterflow.context.loop_index))
    time.sleep(0.1)
    raise LOOP()


def test_a_cancelled_run_stops_its_loop_on_the_worker(dask_executor, tmp_path):
    progress = tmp_path / "progress"
    recorder = Recorder()
    with Flow("cancel me") as flow:
        count_for_a_while(str(progress))

    def interrupt() -> None:
        if recorder.wait_for(
            lambda events: any(
                isinstance(e, TaskRunEvent) and e.state.kind is Kind.LOOPED for e in events
            ),
            timeout=30,
        ):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_flow(flow, executor=dask_executor, store=None, sinks=[recorder])

    # The loop, on a worker process, stops at its next iteration once the run has
    # cancelled its futures (after the runner's grace period for in-process loops).
    last, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = progress.read_text()
        if now == last:
            break
        last = now
    assert now == last, "the loop is still running on its worker"
    assert int(now) < 60


# -- a lost worker ---------------------------------------------------------------------------
def run_killing_a_worker(cluster, flow, store, slug: str, ready) -> tuple:
    """Run ``flow``; SIGKILL the worker running the job of ``slug`` once ``ready(event)``.

    Returns the run's state and the events it sent. The nanny restarts the
    killed worker, and this waits for it, so the module's cluster stays usable.
    """
    recorder = Recorder()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["state"] = run_flow(
                flow, executor=DaskExecutor(address=cluster.scheduler_address),
                store=store, sinks=[recorder],
            )
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    with distributed.Client(cluster, set_as_default=False) as client:
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        assert recorder.wait_for(
            lambda events: any(
                isinstance(e, TaskRunEvent) and e.task_slug == slug and ready(e)
                for e in events
            ),
            timeout=30,
        ), "the loop never got going"
        running_on = [
            worker for worker, keys in client.processing().items()
            if any(slug in str(key) for key in keys)
        ]
        assert len(running_on) == 1
        pid = client.run(os.getpid, workers=running_on)[running_on[0]]
        os.kill(pid, signal.SIGKILL)

        runner.join(timeout=60)
        assert not runner.is_alive(), "the run did not finish after the worker was killed"
        # Leave the shared cluster as we found it: the nanny restarts the worker.
        client.wait_for_workers(2, timeout=30)
    assert "error" not in outcome, outcome.get("error")
    return outcome["state"], recorder


def run_and_kill_its_worker(cluster, store) -> tuple:
    """Run a 21-iteration loop; SIGKILL the worker running it once 4 iterations are in."""
    with Flow("survivor") as flow:
        y = slow_sum(iterations=20, pause=0.05)
    state, recorder = run_killing_a_worker(
        cluster, flow, store, y.slug,
        lambda e: e.state.kind is Kind.LOOPED and e.loop_index >= 3,
    )
    return state, y, recorder


@pytest.mark.dask
def test_killed_worker_does_not_lose_the_run(dask_cluster):
    """SIGKILL the worker running a loop: distributed reruns the job and the run succeeds."""
    state, y, recorder = run_and_kill_its_worker(dask_cluster, store=None)

    assert state.is_successful()
    assert state.result[y].result == sum(range(21))
    states = recorder.states(y.slug)
    starts = [s for s in states if s.kind is Kind.RUNNING and s.loop_index == 0]
    assert len(starts) == 2, "the job was not run a second time"
    assert states[-1] is state.result[y]


@pytest.mark.dask
def test_killed_worker_with_a_store_continues_at_the_last_recorded_iteration(
    dask_cluster, tmp_path
):
    state, y, recorder = run_and_kill_its_worker(dask_cluster, store=f"sqlite:///{tmp_path}/r.db")

    assert state.is_successful()
    assert state.result[y].result == sum(range(21))
    runs = [s.loop_index for s in recorder.states(y.slug) if s.kind is Kind.RUNNING]
    restart = next(i for i in range(1, len(runs)) if runs[i] <= runs[i - 1])
    assert runs[restart] >= 1, f"the rerun started again from iteration 0: {runs}"
    assert recorder.states(y.slug)[-1] is state.result[y]


@task
def journal(path, iterations, pause):
    """slow_sum that appends "<block iteration> <loop index> <pid>" to ``path`` first."""
    ctx = iterflow.context
    with open(path, "a") as f:
        f.write(f"{ctx.block_index} {ctx.loop_index} {os.getpid()}\n")
    time.sleep(pause)
    total = ctx.get("loop_result", 0) + ctx.loop_index
    if ctx.loop_index < iterations:
        raise LOOP(result=total)
    return total


@pytest.mark.dask
def test_killed_worker_inside_a_loop_block_continues_at_the_last_recorded_iteration(
    dask_cluster, tmp_path
):
    """A body task that loops, killed in the block's second iteration, goes on from there."""
    from tests.blocks.tasks import add, at_least

    path = tmp_path / "journal"
    with Flow("survivor in a block") as flow, iterflow.loop(initial=0, max_loops=5) as it:
        s = journal(str(path), iterations=20, pause=0.05)
        it.next(result=add(it.result, s), until=at_least(it.index, 1))
    state, _ = run_killing_a_worker(
        dask_cluster, flow, f"sqlite:///{tmp_path}/r.db", s.slug,
        lambda e: e.block_index == 1 and e.state.kind is Kind.LOOPED and e.loop_index >= 3,
    )

    assert state.is_successful()
    assert state.result[it.final].result == 2 * sum(range(21))
    runs: dict = {0: [], 1: []}
    for line in path.read_text().splitlines():
        block_index, loop_index, pid = map(int, line.split())
        runs[block_index].append((loop_index, pid))
    # Iteration 1 of the block, whose body job was running when its worker died:
    # the rerun, on another worker process, picked up at the last recorded iteration.
    killed = runs[1][0][1]
    rerun = [i for i, pid in runs[1] if pid != killed]
    assert rerun, f"the job was not run a second time: {runs[1]}"
    assert [i for i, _ in runs[1]].count(0) == 1, f"the rerun started from 0: {runs[1]}"
    assert rerun[0] >= 1 and rerun == list(range(rerun[0], 21)), runs[1]
    # Iteration 0's finished job may be recomputed by distributed if its result was
    # still held on the lost worker; that rerun too continues, it never starts over.
    assert [i for i, _ in runs[0]].count(0) == 1, runs[0]
    assert {i for i, _ in runs[0]} == set(range(21)), runs[0]


def test_workers_leave_out_the_running_a_looped_implies(dask_executor):
    from tests.engine.test_implied_running import LEAN, Recorder, build

    lean = Recorder(True)
    state = run_flow(build(), executor=dask_executor, store=None, sinks=[lean])
    assert state.is_successful()
    assert lean.kinds == LEAN
