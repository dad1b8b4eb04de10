"""Engine overhead per link of a chain: task ``k`` takes task ``k - 1``'s result.

A flow of N trivial tasks in a line (each adds one to its input) runs with no
store; the same function called N times in a plain ``for`` loop gives the work
itself. The difference, divided by N, is the engine's cost per chain link:
validating the flow, laying it out, running each task run and recording its
state in memory. Building the flow (``with Flow(...)``) is timed apart, since a
flow is usually built once and run many times.

    python benchmarks/chain.py                 # N = 1,000
    python benchmarks/chain.py -n 10000
    python benchmarks/chain.py --profile       # where one run spends its time
    python benchmarks/chain.py --store sqlite  # wall µs/link, store on (a temporary file)

Times are this process's CPU time (``time.process_time``), best of ``--repeat``
runs taken in turns, so that other work on the shared machine disturbs the
figures as little as possible.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

from iterflow import Flow, task


def inc(x):
    return x + 1


def make_chain(n: int) -> tuple[Flow, object]:
    step = task(inc)
    with Flow("chain") as flow:
        last = step(0)
        for _ in range(n - 1):
            last = step(last)
    return flow, last


def build_time(n: int) -> float:
    start = time.process_time()
    make_chain(n)
    return time.process_time() - start


def chain_run(n: int) -> float:
    flow, last = make_chain(n)
    start = time.process_time()
    state = flow.run(store=None)
    elapsed = time.process_time() - start
    assert state.is_successful(), state
    assert state.result[last].result == n
    return elapsed


def chain_plain(n: int) -> float:
    """The chain's work with no engine: N calls, each on the last one's result."""
    start = time.process_time()
    value = 0
    for _ in range(n):
        value = inc(value)
    elapsed = time.process_time() - start
    assert value == n
    return elapsed


def chain_wall(n: int, store=None) -> float:
    """Wall seconds of a chain run, the writer's wait at its end included."""
    flow, last = make_chain(n)
    start = time.perf_counter()
    state = flow.run(store=store)
    elapsed = time.perf_counter() - start
    assert state.is_successful(), state
    assert state.result[last].result == n
    return elapsed


def store_figures(n: int, url: str, repeat: int) -> None:
    """Per chain link, wall time with no store and with ``url``'s, runs taken in turns."""
    if url == "sqlite":
        home = tempfile.mkdtemp()
        os.environ["ITERFLOW_HOME"] = home
        url = f"sqlite:///{home}/bench.db"
    chain_wall(min(n, 100), url)  # the store's import and schema are a cost per process
    none, stored = [], []
    for _ in range(repeat):
        none.append(chain_wall(n))
        stored.append(chain_wall(n, url))
    label = url.split(":", 1)[0]
    best_none, best_stored = min(none) / n * 1e6, min(stored) / n * 1e6
    share = best_stored / best_none
    print(f"chain of {n:,} tasks, wall time (best of {repeat}): no store {best_none:6.1f} µs/link"
          f"  {label} store {best_stored:6.1f} µs/link  store's share {share:4.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000, help="tasks in the chain")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each; the best counts")
    parser.add_argument("--profile", action="store_true", help="profile one run instead")
    parser.add_argument("--store", metavar="URL",
                        help="only wall time with a store: 'sqlite' (a temporary file) or a URL")
    args = parser.parse_args()
    n = args.n
    if args.store:
        store_figures(n, args.store, args.repeat)
        return

    chain_run(min(n, 100))  # warm up: imports, first-run caches
    if args.profile:
        flow, _ = make_chain(n)
        profiler = cProfile.Profile()
        profiler.runcall(flow.run, store=None)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return

    runs, plains, builds = [], [], []
    for _ in range(args.repeat):
        runs.append(chain_run(n))
        plains.append(chain_plain(n))
        builds.append(build_time(n))
    run, plain, build = min(runs), min(plains), min(builds)
    per_link = (run - plain) / n * 1e6
    print(f"chain of {n:,} tasks, no store (best of {args.repeat})")
    print(f"  flow.run(store=None)  {run * 1e3:8.2f} ms   {run / n * 1e6:6.2f} µs/task")
    print(f"  plain calls           {plain * 1e3:8.2f} ms   {plain / n * 1e6:6.2f} µs/task")
    print(f"  overhead per link     {per_link:6.2f} µs   (target ≤ 5)")
    print(f"  building the flow     {build * 1e3:8.2f} ms   {build / n * 1e6:6.2f} µs/task")


if __name__ == "__main__":
    main()
