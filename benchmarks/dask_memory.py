"""Driver memory on Dask with the store on: a loop carrying a big result, 10 vs N iterations.

The flow is one task that raises ``LOOP`` with an ``--mb`` MB bytes result on
every iteration, run on ``DaskExecutor(n_workers=1)`` -- a local cluster whose
scheduler lives in this process, as for a user's ``DaskExecutor()`` -- and
recorded to a SQLite store. Each figure is the peak resident memory of this
process during the run (sampled every 20 ms); the growth from 10 to N
iterations is what each iteration leaves behind (target: within 50 MB).

    python benchmarks/dask_memory.py              # N = 1,000, 1 MB
    python benchmarks/dask_memory.py -n 300 --mb 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import iterflow
from iterflow import Flow, task
from iterflow.runtime import run_flow
from iterflow.signals import LOOP


@task
def carry(iterations: int, size: int) -> int:
    i = iterflow.context.loop_index
    if i < iterations:
        raise LOOP(result=bytes([i % 256]) * size)
    return i


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_during(fn) -> tuple[int, float]:
    """``(peak RSS in bytes, seconds)`` while ``fn()`` runs."""
    peak, stop = [rss()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        stop.set()
        sampler.join()
    return peak[0], time.perf_counter() - start


def measure(n: int, size: int, store: str) -> tuple[tuple[int, float], tuple[int, float]]:
    """Peak RSS and time at 10 and at ``n`` iterations, one executor for both runs."""
    from iterflow.executors import DaskExecutor

    def run(iterations: int) -> None:
        with Flow("dask memory") as flow:
            carry(iterations, size)
        state = run_flow(flow, executor=executor, store=store)
        assert state.is_successful(), state

    executor = DaskExecutor(n_workers=1)
    run(3)  # warm up: imports, the store's schema, the worker
    return peak_during(lambda: run(10)), peak_during(lambda: run(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="iterations")
    parser.add_argument("--mb", type=float, default=1.0, help="loop result size, MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["ITERFLOW_HOME"] = home
        (few, few_s), (many, many_s) = measure(
            args.n, int(args.mb * 2**20), f"sqlite:///{home}/bench.db"
        )
    mb = 2**20
    print(f"{'iterations':>10}  {'peak RSS':>9}  time")
    print(f"{10:>10,}  {few / mb:6.0f} MB  {few_s:5.1f} s")
    print(f"{args.n:>10,}  {many / mb:6.0f} MB  {many_s:5.1f} s")
    print(f"growth: {(many - few) / mb:.0f} MB")


if __name__ == "__main__":
    main()
