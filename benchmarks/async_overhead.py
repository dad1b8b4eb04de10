"""Per-iteration overhead of an async task's loop, against a bare ``await`` loop.

Runs the accumulate loop (DESIGN §2) as an ``async def`` task for N
iterations through the engine (store off), and awaits the same coroutine
function N times in a plain ``while`` loop on one event loop, catching
``LOOP`` as the engine does; the difference per iteration is the engine's
overhead (target: at most 10 µs). Also reports a map of async tasks that
each await a short sleep, against ``asyncio.gather`` of the same coroutines:
what the run's event loop and ``max_concurrency`` cost per child.

    python benchmarks/async_overhead.py            # N = 10,000 and 100,000
    python benchmarks/async_overhead.py --cpu      # the loops in CPU time (a busy machine)
    python benchmarks/async_overhead.py --store    # also with a batched SQLite store
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import iterflow
from iterflow import LOOP, Flow, task


def make_flow() -> tuple[Flow, object]:
    @task
    async def accumulate(x, iterations):
        ctx = iterflow.context
        result = x + ctx.get("loop_result", 0)
        if ctx.loop_index < iterations:
            raise LOOP(result=result)
        return result

    with Flow("async loop overhead") as flow:
        y = accumulate(x=1, iterations=iterflow.Parameter("n"))
    return flow, y


def engine_loop(n: int, clock=time.perf_counter, store=None) -> float:
    flow, y = make_flow()
    start = clock()
    state = flow.run(parameters={"n": n - 1}, store=store)
    elapsed = clock() - start
    assert state.result[y].result == n, state.result[y]
    return elapsed


def bare_loop(n: int, clock=time.perf_counter) -> float:
    """The same n iterations with no engine: await, raise, catch, carry the result."""

    async def step(x, iterations, loop_index, loop_result):
        result = x + loop_result
        if loop_index < iterations:
            raise LOOP(result=result)
        return result

    async def main() -> float:
        start = clock()
        result, i = 0, 0
        while True:
            try:
                await step(1, n - 1, i, result)
                break
            except LOOP as sig:
                result = sig.result
                i += 1
        return clock() - start

    return asyncio.run(main())


def engine_map(children: int, seconds: float) -> float:
    @task
    async def wait(i):
        await asyncio.sleep(seconds)
        return i

    with Flow("async map") as flow:
        w = wait.map(list(range(children)))
    start = time.perf_counter()
    state = flow.run(store=None, max_concurrency=children)
    elapsed = time.perf_counter() - start
    assert state.result[w].result == list(range(children))
    return elapsed


def bare_gather(children: int, seconds: float) -> float:
    async def wait(i):
        await asyncio.sleep(seconds)
        return i

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(wait(i) for i in range(children)))
        return time.perf_counter() - start

    return asyncio.run(main())


def store_figures(ns: list[int], clock) -> None:
    """The async loop with a batched SQLite store against none, runs taken in turns."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["ITERFLOW_HOME"] = home
        url = f"sqlite:///{home}/bench.db"
        engine_loop(1000, store=url)  # SQLAlchemy's import and the schema: once a process
        for n in ns:
            none, stored = [], []
            for _ in range(5):
                none.append(engine_loop(n, clock))
                stored.append(engine_loop(n, clock, store=url))
            a, b = min(none) / n * 1e6, min(stored) / n * 1e6
            print(f"async loop, SQLite store  N={n:>9,}  engine {b:6.2f} µs/it  no store "
                  f"{a:6.2f} µs/it  store's cost {b - a:6.2f} µs/it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--children", type=int, default=1_000)
    parser.add_argument("--cpu", action="store_true",
                        help="time the loops in CPU time: steadier on a shared machine")
    parser.add_argument("--store", action="store_true",
                        help="also the loop with a batched SQLite store (a temporary file)")
    args = parser.parse_args()
    # CPU time of the process: the runner's thread only waits while the loop thread works.
    clock = time.process_time if args.cpu else time.perf_counter
    engine_loop(1000)  # warm up imports
    for n in args.n:
        engine = min(engine_loop(n, clock) for _ in range(5)) / n * 1e6
        bare = min(bare_loop(n, clock) for _ in range(5)) / n * 1e6
        print(f"async loop, no store  N={n:>9,}  engine {engine:6.2f} µs/it  bare await "
              f"{bare:5.2f} µs/it  overhead {engine - bare:6.2f} µs/it")
    if args.store:
        store_figures(args.n, clock)
    m = args.children
    engine = min(engine_map(m, 0.05) for _ in range(3))
    bare = min(bare_gather(m, 0.05) for _ in range(3))
    print(f"async map of {m:,} (each awaits 50 ms)  engine {engine * 1e3:7.1f} ms  gather "
          f"{bare * 1e3:6.1f} ms  overhead {(engine - bare) / m * 1e6:6.1f} µs/child")


if __name__ == "__main__":
    main()
