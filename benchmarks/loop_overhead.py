"""Per-iteration overhead of a task loop, against a plain Python loop.

Runs the accumulate loop (DESIGN §2) for N iterations through the engine and
calls the same function N times in a plain ``for`` loop; the difference per
iteration is the engine's overhead. Also measures peak memory of a long loop
(tracemalloc), which must not grow with N.

    python benchmarks/loop_overhead.py            # N = 10,000 and 100,000
    python benchmarks/loop_overhead.py --memory   # also 1,000,000 iterations under tracemalloc
    python benchmarks/loop_overhead.py --store    # also with the run store on (batched, every)
    python benchmarks/loop_overhead.py --metrics  # cost of 3 log_metric calls per iteration
    python benchmarks/loop_overhead.py --end-wait # batched store: the wait at a run's end
    python benchmarks/loop_overhead.py --end-wait --url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import iterflow
from iterflow import LOOP, Flow, log_metric, task


def make_flow(checkpoint=None, metrics=False, stamps=None) -> tuple[Flow, object]:
    """The accumulate loop; ``stamps`` (a list) gets the time its last iteration ended."""

    @task(checkpoint=checkpoint)
    def accumulate(x, iterations):
        ctx = iterflow.context
        result = x + ctx.get("loop_result", 0)
        if metrics:
            log_metric("result", result)
            log_metric("half", result / 2)
            log_metric("index", ctx.loop_index)
        if ctx.loop_index < iterations:
            raise LOOP(result=result)
        if stamps is not None:
            stamps.append(time.perf_counter())
        return result

    with Flow("loop overhead") as flow:
        y = accumulate(x=1, iterations=iterflow.Parameter("n"))
    return flow, y


def plain_loop(n: int, clock=time.perf_counter) -> float:
    """The same n iterations with no engine: call, raise, catch, carry the result."""

    def step(x, iterations, loop_index, loop_result):
        result = x + loop_result
        if loop_index < iterations:
            raise LOOP(result=result)
        return result

    start = clock()
    result, i = 0, 0
    while True:
        try:
            step(1, n - 1, i, result)
            break
        except LOOP as sig:
            result = sig.result
            i += 1
    return clock() - start


def engine_loop(
    n: int, store=None, checkpoint=None, clock=time.perf_counter, metrics=False
) -> float:
    """n iterations of the accumulate loop through the engine (``metrics``: 3 per iteration)."""
    flow, y = make_flow(checkpoint, metrics)
    start = clock()
    state = flow.run(parameters={"n": n - 1}, store=store)
    elapsed = clock() - start
    assert state.is_successful(), state
    assert state.result[y].result == n, state.result[y]
    return elapsed


def wall_and_cpu(n: int, **kwargs) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``engine_loop(n, **kwargs)``; CPU counts the writer too."""
    cpu = time.process_time()
    wall = engine_loop(n, **kwargs)
    return wall, time.process_time() - cpu


def end_wait(n: int, store=None) -> tuple[float, float]:
    """(wall seconds of the run, seconds from its last iteration's end to ``flow.run()``'s return).

    The second is what a run waits at its end: the writer committing what the
    loop left queued, the final states, closing the sink.
    """
    stamps: list[float] = []
    flow, y = make_flow(stamps=stamps)
    start = time.perf_counter()
    state = flow.run(parameters={"n": n - 1}, store=store)
    end = time.perf_counter()
    assert state.is_successful(), state
    assert state.result[y].result == n, state.result[y]
    return end - start, end - stamps[-1]


def end_wait_figures(ns: list[int], rounds: int, url: str | None = None) -> None:
    """Per N: µs/iteration and the wait at the run's end, no store and batched (``url``).

    ``url`` None: SQLite in a temporary file.
    """
    with tempfile.TemporaryDirectory() as home:
        os.environ["ITERFLOW_HOME"] = home
        url = url or f"sqlite:///{home}/bench.db"
        end_wait(1000, store=url)  # the store's import, schema and statements: once
        for n in ns:
            for label, store in (("no store", None), ("store, batched", url)):
                runs = sorted(end_wait(n, store=store) for _ in range(rounds))
                waits = sorted(w for _, w in runs)
                per_it = [t / n * 1e6 for t, _ in runs]
                print(f"{label:<16} N={n:>9,}  wall {min(per_it):6.2f}-{max(per_it):6.2f} µs/it"
                      f"  end wait median {waits[len(waits) // 2] * 1e3:6.1f} ms"
                      f" ({waits[0] * 1e3:.1f}-{waits[-1] * 1e3:.1f})")


def report(label: str, n: int, engine: float, plain: float) -> None:
    per_engine = engine / n * 1e6
    per_plain = plain / n * 1e6
    print(
        f"{label:<28} N={n:>9,}  engine {per_engine:6.2f} µs/it  plain {per_plain:5.2f} µs/it"
        f"  overhead {per_engine - per_plain:6.2f} µs/it  ratio {per_engine / per_plain:5.1f}x"
    )


def peak_memory(n: int, store=None) -> float:
    flow, _ = make_flow()
    tracemalloc.start()
    flow.run(parameters={"n": n - 1}, store=store)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def peak_rss_with_store(n: int) -> tuple[float, float]:
    """Peak resident memory (MB) of a fresh process running an n-iteration loop, store on,
    and of the store's writer process it started (0 if none)."""
    code = (
        "import os, resource, sys, tempfile;"
        "os.environ['ITERFLOW_HOME'] = tempfile.mkdtemp();"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r});"
        "import loop_overhead as b;"
        f"b.engine_loop({n}, store='default');"
        "from iterflow.store import writer_process as w;"
        "p = w.writer_process(start=False);"
        "status = open(f'/proc/{p._popen.pid}/status').read() if p else '';"
        "hwm = [l.split()[1] for l in status.splitlines() if l.startswith('VmHWM')] or ['0'];"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    mine, writer = out.stdout.split()[-2:]
    return int(mine) / 1024, int(writer) / 1024


def store_size(url: str, n: int = 100_000) -> int:
    """Bytes the SQLite store at ``url`` grows by when one run records n iterations."""
    path = url.removeprefix("sqlite:///")

    def size() -> int:
        # Fold the write-ahead log into the file, so the file says it all.
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(path)

    before = size()
    engine_loop(n, store=url)
    return size() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="measure peak memory at 1e6")
    parser.add_argument("--store", action="store_true", help="also run with the store on")
    parser.add_argument(
        "--memory-store", action="store_true",
        help="peak RSS of 100,000 vs 1,000,000 iterations with the store on",
    )
    parser.add_argument(
        "--metrics", action="store_true",
        help="batched store: a loop logging 3 metrics per iteration against one logging none",
    )
    parser.add_argument(
        "--end-wait", action="store_true",
        help="only the wait from a loop's last iteration to flow.run()'s return",
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure (--end-wait)")
    parser.add_argument("--url", help="--end-wait: this store, not a temporary SQLite file")
    parser.add_argument("-n", type=int, nargs="*", default=[10_000, 100_000])
    args = parser.parse_args()
    if args.end_wait:
        end_wait_figures(args.n, args.rounds, args.url)
        return
    for n in args.n:
        engine_loop(min(n, 1000))  # warm up imports and caches
        engine = min(engine_loop(n) for _ in range(3))
        report("no store", n, engine, min(plain_loop(n) for _ in range(3)))
    if args.store:
        with tempfile.TemporaryDirectory() as home:
            os.environ["ITERFLOW_HOME"] = home
            url = f"sqlite:///{home}/bench.db"
            # Opening the first store imports SQLAlchemy and creates the schema
            # (~0.3 s): a cost per process, not per iteration, so warm up first.
            engine_loop(1000, store=url)
            for n in args.n:
                plain = min(plain_loop(n) for _ in range(3))
                batched = min(engine_loop(n, store=url) for _ in range(3))
                report("store, batched", n, batched, plain)
                m = min(n, 10_000)  # synchronous commits are slow by design: fewer of them
                every = engine_loop(m, store=url, checkpoint="every")
                report('store, checkpoint="every"', m, every, plain_loop(m))
            print(f"SQLite file per 100,000 recorded iterations: {store_size(url) / 1e6:.1f} MB")
    if args.metrics:
        with tempfile.TemporaryDirectory() as home:
            os.environ["ITERFLOW_HOME"] = home
            url = f"sqlite:///{home}/bench.db"
            engine_loop(1000, store=url, metrics=True)
            for n in args.n:
                # Interleaved, best of 5 each: both see the same machine load.
                without, with_ = [], []
                for _ in range(5):
                    without.append(wall_and_cpu(n, store=url))
                    with_.append(wall_and_cpu(n, store=url, metrics=True))
                for k, what in ((0, "wall"), (1, "CPU ")):
                    a = min(t[k] for t in without) / n * 1e6
                    b = min(t[k] for t in with_) / n * 1e6
                    print(f"store, batched  N={n:>9,}  {what}  no metrics {a:6.2f} µs/it  "
                          f"3 metrics {b:6.2f} µs/it  cost {b - a:5.2f} µs/it")
    if args.memory_store:
        (small, small_writer), (large, large_writer) = (
            peak_rss_with_store(100_000), peak_rss_with_store(1_000_000))
        print(f"peak RSS with the store: N=100,000 {small:.1f} MB, N=1,000,000 {large:.1f} MB "
              f"(growth {large - small:.1f} MB); its writer process: {small_writer:.1f} MB, "
              f"{large_writer:.1f} MB")
    if args.memory:
        small, large = peak_memory(10_000), peak_memory(1_000_000)
        print(f"peak traced memory: N=10,000 {small:.2f} MB, N=1,000,000 {large:.2f} MB "
              f"(growth {large - small:.2f} MB)")


if __name__ == "__main__":
    main()
