"""Engine overhead of a loop block, per task run, against the single-task loop's per iteration.

A block of three trivial tasks (add the index to the carried value, pass it
on, decide whether to stop) runs for N iterations; the same three functions
called N times in a plain ``for`` loop give the work itself. The difference,
divided by the 3 * N task runs, is the block's overhead per task run. The
single-task loop's overhead per iteration is measured the same way (the
accumulate loop of ``loop_overhead.py`` against its plain loop). The target:
the first within 2x of the second.

    python benchmarks/block_overhead.py              # N = 10,000, default executor
    python benchmarks/block_overhead.py --all        # also the machine path and threads
    python benchmarks/block_overhead.py -n 100000
    python benchmarks/block_overhead.py --memory     # peak memory at N and 10 N: must not grow
    python benchmarks/block_overhead.py --store sqlite -n 3000   # wall µs/iteration, store on
    python benchmarks/block_overhead.py --store postgresql+psycopg://... -n 3000

On the default LocalExecutor a body whose tasks are plain runs inline (no
machine, no job per task run); ``--all`` also times the path every other
executor takes — a machine per iteration and a job per task run — by forcing
it with a LocalExecutor subclass, and ThreadExecutor.

Times are this process's CPU time (``time.process_time``), best of five runs
taken in turns, so that other work on the machine disturbs the ratio as
little as possible; for ThreadExecutor that is the CPU of all its threads.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

from loop_overhead import engine_loop, plain_loop

from iterflow import Flow, Parameter, loop, task
from iterflow.executors import LocalExecutor, ThreadExecutor

TASKS_PER_ITERATION = 3


def add(total, i):
    return total + i


def same(x):
    return x


def done(i, n):
    return i >= n - 1


def make_block_flow() -> tuple[Flow, object]:
    with Flow("block overhead") as flow:
        n = Parameter("n")
        with loop(initial=0, name="block") as it:
            total = task(add)(it.result, it.index)
            passed = task(same)(total)
            it.next(result=passed, until=task(done)(it.index, n))
    return flow, it


def block_engine(n: int, executor=None) -> float:
    flow, it = make_block_flow()
    start = time.process_time()
    state = flow.run(parameters={"n": n}, store=None, executor=executor)
    elapsed = time.process_time() - start
    assert state.is_successful(), state
    assert state.result[it.final].result == n * (n - 1) // 2
    assert state.result[it.final].loop_count == n
    return elapsed


def block_plain(n: int) -> float:
    """The block's work with no engine: three calls per iteration, carry, stop."""
    start = time.process_time()
    carried = 0
    for i in range(n):
        carried = same(add(carried, i))
        if done(i, n):
            break
    return time.process_time() - start


def loop_engine(n: int) -> float:
    return engine_loop(n, clock=time.process_time)


def loop_plain(n: int) -> float:
    return plain_loop(n, clock=time.process_time)


class MachinePath(LocalExecutor):
    """A LocalExecutor the block does not run inline: a machine and a job per task run."""


def block_wall(n: int, store=None) -> float:
    """Wall seconds of an n-iteration block run, the writer's wait at its end included."""
    flow, _ = make_block_flow()
    start = time.perf_counter()
    state = flow.run(parameters={"n": n}, store=store)
    elapsed = time.perf_counter() - start
    assert state.is_successful(), state
    return elapsed


def store_figures(n: int, url: str) -> None:
    """Per block iteration (3 task runs), wall time with no store and with ``url``'s."""
    if url == "sqlite":
        home = tempfile.mkdtemp()
        os.environ["ITERFLOW_HOME"] = home
        url = f"sqlite:///{home}/bench.db"
    block_wall(200, url)  # the store's import and schema are a cost per process
    none = min(block_wall(n) for _ in range(3)) / n * 1e6
    stored = min(block_wall(n, url) for _ in range(3)) / n * 1e6
    label = url.split(":", 1)[0]
    print(f"block of 3 tasks      N={n:>9,}  no store {none:7.1f} µs/iteration  "
          f"{label} store {stored:7.1f} µs/iteration  store's share {stored / none:4.1f}x")


def peak_memory(n: int) -> float:
    block_engine(min(n, 1000))  # imports and caches are not the loop's
    tracemalloc.start()
    block_engine(n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def best(fn, *args, repeat: int = 3) -> float:
    return min(fn(*args) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="iterations (default 10,000)")
    parser.add_argument("--all", action="store_true", help="also the machine path and threads")
    parser.add_argument("--memory", action="store_true", help="peak memory at N and 10 N")
    parser.add_argument("--store", metavar="URL",
                        help="only wall time with a store: 'sqlite' (a temporary file) or a URL")
    args = parser.parse_args()
    n = args.n
    if args.store:
        store_figures(n, args.store)
        return
    block_engine(min(n, 1000))  # warm up imports and caches
    loop_engine(min(n, 1000))

    # Interleaved, best of five: the machine's load changes under a long benchmark,
    # and both sides of the ratio should see the same conditions.
    loop_times, block_times = [], []
    for _ in range(5):
        loop_times.append(loop_engine(n))
        block_times.append(block_engine(n))
    loop_overhead = (min(loop_times) - best(loop_plain, n, repeat=5)) / n * 1e6
    print(f"single-task loop      N={n:>9,}  overhead {loop_overhead:6.2f} µs per iteration")
    plain = best(block_plain, n, repeat=5) / (n * TASKS_PER_ITERATION) * 1e6
    inline = min(block_times)
    runs = [("block, inline (local)", None, n)]
    if args.all:
        runs += [
            ("block, machine path", MachinePath(), n),
            ("block, ThreadExecutor", ThreadExecutor(max_workers=4), min(n, 2_000)),
        ]
    for label, executor, count in runs:
        elapsed = inline if executor is None else best(block_engine, count, executor)
        engine = elapsed / (count * TASKS_PER_ITERATION) * 1e6
        overhead = engine - plain
        print(
            f"{label:<21} N={count:>9,}  {TASKS_PER_ITERATION} tasks: engine {engine:6.2f} µs per "
            f"task run, plain {plain:4.2f}, overhead {overhead:6.2f} µs per task run = "
            f"{overhead / loop_overhead:4.1f}x the single-task loop's"
        )
    if args.memory:
        small, large = peak_memory(n), peak_memory(10 * n)
        print(f"peak traced memory: N={n:,} {small:.2f} MB, N={10 * n:,} {large:.2f} MB")


if __name__ == "__main__":
    main()
