"""One event loop per flow run (DESIGN §11), what it is shared by, and its bounds."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import warnings

import pytest

import iterflow
from iterflow import LOOP, Flow, task, unmapped
from iterflow.errors import (
    IterflowError,
    LoopBlockedWarning,
    OptionError,
    RunCancelled,
    UnsupportedTaskError,
)
from iterflow.executors import ThreadExecutor
from iterflow.store import list_runs, task_runs


def test_every_async_task_of_a_run_is_awaited_on_one_loop_off_the_callers_thread(run, executor):
    loops, threads = set(), set()

    @task
    async def where(i):
        await asyncio.sleep(0)
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.get_ident())
        if iterflow.context.loop_index < 2:
            raise LOOP()
        return i

    @task
    def plain(xs):
        return sum(xs)

    @task
    async def after(total):
        loops.add(id(asyncio.get_running_loop()))
        return total

    with Flow("one loop") as flow:
        a = after(plain(where.map([1, 2, 3, 4])))
    assert run(flow, executor=executor).result[a].result == 10
    assert len(loops) == 1 and len(threads) == 1
    assert threading.get_ident() not in threads


def test_a_sync_task_and_async_tasks_share_a_queue_across_iterations(run, executor):
    """The queue is made by a plain task and used by two looping async tasks at once."""

    @task
    def make_queue():
        return asyncio.Queue(maxsize=2)  # small: the producer must wait for the consumer

    @task
    async def produce(queue, n):
        i = iterflow.context.loop_index
        await queue.put(i)
        if i < n - 1:
            raise LOOP()
        await queue.put(None)
        return n

    @task
    async def consume(queue):
        item = await queue.get()
        got = iterflow.context.get("loop_result", [])
        if item is None:
            return got
        raise LOOP(result=[*got, item])

    @task
    def check(queue):  # a sync task after them: the same object, still usable
        return queue.qsize()

    with Flow("queue") as flow:
        q = make_queue()
        p = produce(q, 20)
        c = consume(q)
        left = check(q, upstream_tasks=[p, c])
    state = run(flow, executor=executor)
    assert state.result[c].result == list(range(20)) and state.result[c].loop_count == 21
    assert state.result[left].result == 0


def test_an_async_client_made_in_a_sync_task_pages_an_api_in_a_loop(run, pages_server):
    """httpx.AsyncClient made by one task, used by looping and mapped async tasks: one
    loop, so its pooled connections stay usable (no "Event loop is closed")."""
    httpx = pytest.importorskip("httpx")
    server, base = pages_server

    @task
    def open_client(base_url):
        return httpx.AsyncClient(base_url=base_url)

    @task
    async def pages(client):
        url = iterflow.context.get("loop_result", (None, "/items?page=0"))[1]
        response = await client.get(url)
        response.raise_for_status()
        items = [*iterflow.context.get("loop_result", ([], None))[0], *response.json()]
        following = response.links.get("next")
        if following:
            raise LOOP(result=(items, following["url"]))
        return items

    @task
    async def fetch(client, page):
        return (await client.get(f"/items?page={page}")).json()[0]

    @task
    async def close(client, _a, _b):
        await client.aclose()
        return client.is_closed

    with Flow("paging") as flow:
        client = open_client(base)
        items = pages(client)
        firsts = fetch.map(unmapped(client), [0, 1, 2, 3])
        closed = close(client, items, firsts)
    state = run(flow)
    assert state.result[items].result == [p * 10 + i for p in range(4) for i in range(3)]
    assert state.result[items].loop_count == 4
    assert state.result[firsts].result == [0, 10, 20, 30]
    assert state.result[closed].result is True
    assert server.hits == 8


def test_max_concurrency_bounds_how_many_async_task_runs_are_awaited_at_once(run):
    now = {"running": 0, "most": 0}

    @task
    async def busy(i):
        now["running"] += 1
        now["most"] = max(now["most"], now["running"])
        await asyncio.sleep(0.05)
        now["running"] -= 1
        if iterflow.context.loop_index < 1:
            raise LOOP()
        return i

    with Flow("bounded") as flow:
        b = busy.map(list(range(12)))
    assert run(flow, max_concurrency=3).result[b].result == list(range(12))
    assert now["most"] == 3
    now["most"] = 0
    run(flow)  # the default lets all twelve go at once
    assert now["most"] == 12


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_max_concurrency_must_be_a_positive_int(bad):
    with Flow("bad option") as flow:
        task(lambda: 1, name="one")()
    with pytest.raises(OptionError, match=r"max_concurrency must be an int >= 1") as info:
        flow.run(store=None, max_concurrency=bad)
    assert isinstance(info.value, ValueError) and "'bad option'" in str(info.value)


def test_user_context_reaches_async_tasks():
    @task
    async def tenant():
        await asyncio.sleep(0)
        return iterflow.context.tenant, iterflow.context.extra

    with Flow("context") as flow:
        t = tenant()
    with iterflow.context(tenant="acme"):
        state = flow.run(store=None, context={"extra": 1})
    assert state.result[t].result == ("acme", 1)


def test_a_task_that_blocks_the_loop_is_named_in_a_warning(run):
    @task
    async def blocker():
        time.sleep(1.2)  # blocks the loop: every other async task waits
        return "done"

    @task
    async def ticker():
        await asyncio.sleep(0.01)
        if iterflow.context.loop_index < 5:
            raise LOOP()
        return "ticked"

    with Flow("blocked") as flow:
        blocker()
        ticker()
    with pytest.warns(LoopBlockedWarning) as caught:
        state = run(flow)
    assert state.is_successful()
    (message,) = {str(w.message) for w in caught}
    assert "async task 'blocker' in flow 'blocked' has blocked the event loop" in message
    assert "asyncio.to_thread" in message


def test_no_warning_for_tasks_that_await(run):
    @task
    async def polite(i):
        await asyncio.sleep(0.7)
        return i

    with Flow("polite") as flow:
        polite.map([1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopBlockedWarning)
        assert run(flow).is_successful()


def test_an_async_generator_is_refused_with_what_to_do_instead():
    with pytest.raises(UnsupportedTaskError) as info:

        @task
        async def stream():
            yield 1

    assert isinstance(info.value, TypeError) and isinstance(info.value, IterflowError)
    message = str(info.value)
    assert "'stream'" in message and "async generator" in message
    assert "LOOP(result=item)" in message and "list" in message

    with pytest.raises(UnsupportedTaskError, match="'Streaming'"):

        class Streaming(iterflow.Task):
            async def run(self):
                yield 1

        Streaming()


def test_await_flow_run_async_uses_the_callers_loop_and_leaves_it_free():
    @task
    async def on_loop():
        await asyncio.sleep(0.05)
        if iterflow.context.loop_index < 5:
            raise LOOP()
        return id(asyncio.get_running_loop())

    with Flow("run_async") as flow:
        o = on_loop()

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def tick():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(tick())
        state = await flow.run_async(store=None)
        stop.set()
        await ticking
        return state, id(asyncio.get_running_loop()), ticks

    state, loop_id, ticks = asyncio.run(main())
    assert state.is_successful() and state.result[o].result == loop_id
    assert ticks >= 10  # the caller's own task went on while the flow ran


def test_flow_run_inside_a_running_loop_runs_on_a_worker_thread():
    @task
    async def fetch():
        await asyncio.sleep(0)
        return threading.current_thread().name

    @task
    def plain():
        return threading.current_thread().name

    with Flow("in jupyter") as flow:
        f = fetch()
        p = plain()

    async def main():
        return flow.run(store=None), threading.current_thread().name

    state, caller = asyncio.run(main())
    assert state.is_successful()
    assert state.result[p].result == "iterflow-run" != caller
    assert state.result[f].result == "iterflow-event-loop"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_run_inside_a_running_loop_waits_for_its_cancelled_end(tmp_path, signum):
    """The caller's flow.run() raises only once the run on the worker thread has ended.

    (On Python 3.11 an interrupted Thread.join() marks the still-running thread as
    stopped: the caller raised at once, and a process exiting then closed the store
    under the run before it recorded itself Cancelled.)
    """
    url = f"sqlite:///{tmp_path / 'store.db'}"
    waiting = threading.Event()

    @task
    async def poll():
        waiting.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # winding down takes a moment: the caller must wait
            raise

    with Flow("signalled in a loop") as flow:
        poll()

    def send() -> None:
        if waiting.wait(30):
            os.kill(os.getpid(), signum)

    async def app():
        flow.run(store=url)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else RunCancelled):
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            asyncio.run(app())
        finally:
            signal.signal(signal.SIGINT, previous)
    sender.join(5)
    (recorded,) = list_runs(store=url)
    assert recorded.state == "Cancelled"
    assert {t.task_name: t.state for t in task_runs(recorded.run_id, store=url)} == {
        "poll": "Cancelled"}


def test_async_tasks_on_threads_beside_sync_tasks(run):
    """Sync tasks run on the pool while async ones are awaited on the run's loop."""
    names = {}

    @task
    def plain(i):
        time.sleep(0.05)
        names.setdefault("plain", set()).add(threading.current_thread().name)
        return i

    @task
    async def awaited(i):
        await asyncio.sleep(0.05)
        names.setdefault("async", set()).add(threading.current_thread().name)
        return -i

    with Flow("mixed") as flow:
        p = plain.map(list(range(6)))
        a = awaited.map(p)
    state = run(flow, executor=ThreadExecutor(max_workers=3))
    assert state.result[a].result == [0, -1, -2, -3, -4, -5]
    assert all(name.startswith("iterflow_") or name.startswith("iterflow")
               for name in names["plain"])
    assert names["async"] == {"iterflow-event-loop"}


def test_a_loop_that_never_suspends_still_lets_the_other_tasks_run(run):
    """Its iterations await nothing that waits, yet the driver lets the loop turn."""
    progress = {"spin": 0, "beside": []}
    # Long enough that, however loaded the machine, the spinning loop outlasts the
    # eleven 10 ms turns the other task needs (about 0.3 s of spinning at least).
    spins = 100_000

    @task(max_loops=10_000_000)
    async def spin():
        progress["spin"] = iterflow.context.loop_index
        if iterflow.context.loop_index < spins:
            raise LOOP()
        return "spun"

    @task
    async def beside():
        await asyncio.sleep(0.001)
        progress["beside"].append(progress["spin"])
        if iterflow.context.loop_index < 20:
            raise LOOP()
        return "done"

    with Flow("fair") as flow:
        s = spin()
        b = beside()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopBlockedWarning)
        state = run(flow)
    assert (state.result[s].result, state.result[b].result) == ("spun", "done")
    # The other task went on while the spinning loop ran, not only after it ended.
    assert progress["beside"][10] < spins, progress["beside"]


def test_many_short_steps_at_once_are_not_taken_for_a_blocked_loop(run):
    """A big map's children starting together keep the loop busy for a while, but no
    one of them holds it: no warning."""

    @task
    async def quick(i):
        deadline = time.perf_counter() + 0.0005  # a short step of its own, then done
        while time.perf_counter() < deadline:
            pass
        return i

    with Flow("burst") as flow:
        q = quick.map(list(range(4000)))  # 2 s of short steps, side by side
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = run(flow)
    assert state.result[q].result == list(range(4000))
    assert not [w for w in caught if issubclass(w.category, LoopBlockedWarning)]
