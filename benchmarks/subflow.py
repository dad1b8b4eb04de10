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

Times are wall-clock and CPU (the store's writer thread works beside the
runner, and its CPU counts too), best of ``--repeat`` runs taken in turns;
on a loaded machine read the CPU figure. The same is then measured with no
store, which is the engine's part alone.
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
        for label, where in (("store on", store), ("no store", None)):
            inline, sub = [], []
            for _ in range(args.repeat):
                inline.append(timed(n, False, where))
                sub.append(timed(n, True, where))
            report(label, n, inline, sub)
        store.close()


def report(label: str, n: int, inline: list, sub: list) -> None:
    wall = (min(w for w, _ in sub) - min(w for w, _ in inline)) / n * 1e6
    cpu = (min(c for _, c in sub) - min(c for _, c in inline)) / n * 1e6
    print(f"{label}: {n} inline task runs {min(w for w, _ in inline) * 1e3:.1f} ms, "
          f"{n} child flow runs {min(w for w, _ in sub) * 1e3:.1f} ms (wall)")
    print(f"{label}: overhead per child run {wall:.0f} µs wall, {cpu:.0f} µs CPU "
          f"(target <= 200 µs with the store on)")


if __name__ == "__main__":
    main()
