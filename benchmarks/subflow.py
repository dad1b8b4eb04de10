"""Overhead of a subflow call over an inline task, per child run, with the store on.

A parent maps a one-task child flow over N inputs (N child flow runs, each
linked to its parent in the store); the same parent with the child's task
mapped inline over the same inputs is the baseline. The difference, divided
by N, is what a child run costs: its flow run (started, its task, ended), the
link row, and reading the child's value. Both record to a fresh SQLite store
in a temporary directory.

    python benchmarks/subflow.py                # N = 200
    python benchmarks/subflow.py -n 1000
    python benchmarks/subflow.py --profile      # where the subflow run spends its time

Times are wall-clock (the store's writer thread works beside the runner),
best of ``--repeat`` runs taken in turns; CPU time is printed beside them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from iterflow import Flow, Parameter, task
from iterflow.store import open_store


def inc(x):
    return x + 1


STEP = task(inc, name="inc")


def make_child() -> Flow:
    with Flow("child") as child:
        STEP(Parameter("x"))
    return child


def make_parent(n: int, subflow: bool) -> Flow:
    child = make_child()
    with Flow("parent") as parent:
        if subflow:
            child.map(x=list(range(n)))
        else:
            STEP.map(list(range(n)))
    return parent


def timed(n: int, subflow: bool, store) -> tuple[float, float]:
    parent = make_parent(n, subflow)
    wall, cpu = time.perf_counter(), time.process_time()
    state = parent.run(store=store)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert state.is_successful(), state
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="child runs per parent run")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best counts")
    parser.add_argument("--profile", action="store_true", help="profile one subflow run")
    args = parser.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as home:
        store = open_store(f"sqlite:///{Path(home) / 'bench.db'}", home=home)
        timed(10, True, store)  # warm up: imports, the schema, first-run caches
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            timed(n, True, store)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            return
        inline, sub = [], []
        for _ in range(args.repeat):
            inline.append(timed(n, False, store))
            sub.append(timed(n, True, store))
        store.close()
    best_inline, best_sub = min(inline), min(sub)
    per_child = (best_sub[0] - best_inline[0]) / n * 1e6
    per_child_cpu = (min(c for _, c in sub) - min(c for _, c in inline)) / n * 1e6
    print(f"{n} inline task runs:      {best_inline[0] * 1e3:8.1f} ms wall")
    print(f"{n} child flow runs:       {best_sub[0] * 1e3:8.1f} ms wall")
    print(f"overhead per child run:  {per_child:8.1f} µs wall, {per_child_cpu:.1f} µs CPU "
          f"(target <= 200 µs)")


if __name__ == "__main__":
    main()
