"""Start-up cost: ``import iterflow`` and the first ``flow.run()`` in a fresh process.

Each figure is the wall time of a fresh Python subprocess doing one thing,
measured inside it with ``time.perf_counter`` from before ``import iterflow`` to
the end of the work (the interpreter's own start is left out):

- ``import iterflow``;
- import, then a 10-iteration looping flow run with ``store=None``;
- import, then the same run with the default SQLite store, in a temporary
  ``ITERFLOW_HOME`` (a new store file each time: the schema is created too).

The variants run in turns, ``--repeat`` times each; medians are printed.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeat 21
    python benchmarks/startup.py --importtime store   # its slowest imports (-X importtime)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import time
start = time.perf_counter()
import iterflow
from iterflow import LOOP, Flow, task
imported = time.perf_counter()
mode = {mode!r}
if mode != "import":
    @task
    def count(n):
        i = iterflow.context.loop_index
        if i < n:
            raise LOOP(result=i)
        return i

    with Flow("startup") as flow:
        last = count(10)
    state = flow.run(store=None) if mode == "none" else flow.run()
    assert state.is_successful(), state
    assert state.result[last].result == 10
end = time.perf_counter()
print((imported - start) * 1e3, (end - start) * 1e3)
"""

VARIANTS = {
    "import": "import iterflow",
    "none": "import + 10-iteration loop, store=None",
    "store": "import + 10-iteration loop, SQLite store",
}


def run_child(mode: str, home: str) -> tuple[float, float]:
    env = dict(os.environ, ITERFLOW_HOME=home)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(mode=mode)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def importtime(mode: str, home: str, top: int) -> None:
    env = dict(os.environ, ITERFLOW_HOME=home)
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CHILD.format(mode=mode)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line.split(":", 1)[1].split("|")
        rows.append((int(cumulative), int(own), name.rstrip()))
    rows.sort(reverse=True)
    print(f"slowest imports of the {mode!r} run, top {top}: cumulative µs, own µs, module")
    for cumulative, own, name in rows[:top]:
        print(f"  {cumulative:>8}  {own:>8}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="fresh processes per variant")
    parser.add_argument(
        "--importtime", choices=list(VARIANTS), help="show one variant's slowest imports instead"
    )
    parser.add_argument("--top", type=int, default=25, help="rows of --importtime")
    args = parser.parse_args()

    times: dict[str, list[float]] = {mode: [] for mode in VARIANTS}
    with tempfile.TemporaryDirectory() as base:
        if args.importtime:
            importtime(args.importtime, os.path.join(base, "importtime"), args.top)
            return
        for i in range(args.repeat):
            for mode in VARIANTS:
                home = os.path.join(base, f"{mode}-{i}")  # a new store each run
                times[mode].append(run_child(mode, home)[1])
    print(f"start-up in a fresh process, median of {args.repeat} (ms)")
    for mode, label in VARIANTS.items():
        values = sorted(times[mode])
        median = statistics.median(values)
        print(f"  {label:<42} {median:7.1f}   (min {values[0]:.1f}, max {values[-1]:.1f})")


if __name__ == "__main__":
    main()
