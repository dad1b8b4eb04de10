"""Fan-out: map a trivial task over N items and reduce, on every executor.

Three comparisons, each against the same work done without the engine:

- LocalExecutor and ThreadExecutor: the engine's overhead per mapped child,
  ``(flow run - plain Python loop) / N``, in µs;
- DaskExecutor on a two-worker LocalCluster (process workers, one thread
  each): the flow run against raw ``client.map`` + ``client.gather`` of the
  same function on the same cluster, and their ratio (target: <= 1.5x).

Each time is the best of ``--repeat`` runs (the machine's noise only ever
adds time). Dask and raw runs take turns, so both see the same conditions;
the ratio is given both as best over best and as the median of the ratios
of each run to the raw run just before it.

    python benchmarks/fanout.py                 # N = 1,000 and 10,000
    python benchmarks/fanout.py -n 1000 -r 5
    python benchmarks/fanout.py --events        # also DaskExecutor with an event sink
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

from iterflow import Flow, Parameter, task
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runtime import run_flow


def increment(x: int) -> int:
    return x + 1


def add_up(values: list[int]) -> int:
    return sum(values)


inc = task(increment, name="inc")
total = task(add_up, name="total")


def make_flow() -> tuple[Flow, object]:
    with Flow("fanout") as flow:
        result = total(inc.map(Parameter("items")))
    return flow, result


class CountingSink:
    """An event sink that only counts: what shipping the events costs, not storing them."""

    def __init__(self) -> None:
        self.count = 0

    def handle(self, event: object) -> None:
        self.count += 1


def run_engine(executor, n: int, sinks=None, store=None) -> float:
    flow, result = make_flow()
    items = list(range(n))
    start = time.perf_counter()
    state = run_flow(flow, parameters={"items": items}, executor=executor, store=store, sinks=sinks)
    elapsed = time.perf_counter() - start
    assert state.is_successful(), state
    assert state.result[result].result == n * (n + 1) // 2, state.result[result]
    return elapsed


def run_plain(n: int) -> float:
    items = list(range(n))
    start = time.perf_counter()
    value = add_up([increment(x) for x in items])
    elapsed = time.perf_counter() - start
    assert value == n * (n + 1) // 2
    return elapsed


def run_raw_dask(client, n: int) -> float:
    items = list(range(n))
    start = time.perf_counter()
    futures = client.map(increment, items, pure=False)
    value = add_up(client.gather(futures))
    elapsed = time.perf_counter() - start
    assert value == n * (n + 1) // 2
    del futures
    return elapsed


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def per_child(elapsed: float, n: int) -> str:
    return f"{elapsed / n * 1e6:7.1f} µs/child"


def in_process_rows(
    sizes: list[int], repeat: int, store: str | None = None
) -> list[tuple[str, int, float, str]]:
    """Engine overhead per child: the flow run minus the same work in a plain loop."""
    rows = []
    executors = (("LocalExecutor", LocalExecutor), ("ThreadExecutor(8)", lambda: ThreadExecutor(8)))
    for n in sizes:
        plain = best(lambda n=n: run_plain(n), repeat)
        for label, make in executors:
            engine = best(lambda make=make, n=n: run_engine(make(), n), repeat)
            rows.append((label, n, engine, f"overhead {per_child(engine - plain, n)}"))
        if store is not None:
            recorded = best(lambda n=n: run_engine(LocalExecutor(), n, store=store), repeat)
            rows.append(("LocalExecutor, store on", n, recorded,
                         f"overhead {per_child(recorded - plain, n)}"))
    return rows


def dask_rows(sizes: list[int], repeat: int, events: bool) -> list[tuple[str, int, float, str]]:
    """DaskExecutor against raw client.map + gather, on one two-worker LocalCluster."""
    import distributed

    from iterflow.executors import DaskExecutor

    rows = []
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        client.gather(client.map(increment, range(100), pure=False))  # warm the workers up
        executor = DaskExecutor(address=cluster.scheduler_address)
        run_engine(executor, 100)
        for n in sizes:
            times: dict[str, list[float]] = {"raw": [], "engine": [], "events": []}
            for _ in range(repeat):  # in turn, so that all see the same machine
                times["raw"].append(run_raw_dask(client, n))
                times["engine"].append(run_engine(executor, n))
                if events:
                    times["events"].append(run_engine(executor, n, [CountingSink()]))
            raw = min(times["raw"])
            rows.append(("raw client.map+gather", n, raw, per_child(raw, n)))
            labels = [("engine", "DaskExecutor")]
            if events:
                labels.append(("events", "DaskExecutor + event sink"))
            for name, label in labels:
                timed = min(times[name])
                # The ratio of each run to the raw run just before it, the median of those:
                # steadier than a ratio of bests when the machine's load drifts.
                paired = statistics.median(t / r for t, r in zip(times[name], times["raw"]))
                rows.append((label, n, timed, f"{per_child(timed, n)}  ratio {timed / raw:4.2f}x"
                             f" (best/best), {paired:4.2f}x (median of paired runs)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="mapped children (repeatable)")
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--events", action="store_true", help="also Dask with an event sink")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--store", action="store_true",
                        help="also LocalExecutor recording to a SQLite store")
    args = parser.parse_args()
    sizes = args.n or [1_000, 10_000]

    with tempfile.TemporaryDirectory() as home:
        store = None
        if args.store:
            os.environ["ITERFLOW_HOME"] = home
            store = f"sqlite:///{home}/bench.db"
            run_engine(LocalExecutor(), 100, store=store)  # import SQLAlchemy, make the schema
        rows = in_process_rows(sizes, args.repeat, store)
    if not args.no_dask:
        rows += dask_rows(sizes, args.repeat, args.events)

    print(f"\n{'executor':<26} {'N':>7}  {'time':>9}  per child")
    for label, n, elapsed, note in rows:
        print(f"{label:<26} {n:>7,}  {elapsed:7.3f} s  {note}")


if __name__ == "__main__":
    main()
