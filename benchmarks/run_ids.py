"""What an idempotent run id costs: ``flow.run(run_id=ID)`` vs ``flow.run()``, store on.

    python benchmarks/run_ids.py [-n 60]

A fresh id adds one write transaction before the run (look the id up, record
the run as ours); an id that finished returns its recorded result without
running. Runs alternate between the variants so that the shared machine's
drift hits both alike; the median of each is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from iterflow import Flow, task
from iterflow.store import open_store


@task
def one():
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="runs per variant")
    args = parser.parse_args()
    with Flow("bench-ids") as flow:
        one()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'store.db'}")
        flow.run(store=store)  # warm up: schema, imports
        flow.run(store=store, run_id="done")
        plain: list[float] = []
        fresh: list[float] = []
        finished: list[float] = []
        for _ in range(args.n):
            for times, run_id in ((plain, None), (fresh, uuid.uuid4().hex), (finished, "done")):
                start = time.perf_counter()
                flow.run(store=store, run_id=run_id)
                times.append(time.perf_counter() - start)
        store.close()
    base = statistics.median(plain) * 1000
    print(f"{'variant':<34} {'median ms':>10} {'vs flow.run()':>14}")
    for name, times in (("flow.run()", plain), ("flow.run(run_id=new id)", fresh),
                        ("flow.run(run_id=finished id)", finished)):
        ms = statistics.median(times) * 1000
        print(f"{name:<34} {ms:>10.2f} {ms - base:>+13.2f}")


if __name__ == "__main__":
    main()
