"""Start-up cost: ``import iterflow`` and the first ``flow.run()`` in a fresh process.

Each figure is the wall time of a fresh Python subprocess doing one thing,
measured inside it with ``time.perf_counter`` from before ``import iterflow`` to
the end of the work (the interpreter's own start is left out):

- ``import iterflow``;
- import, then a 10-iteration looping flow run with ``store=None``;
- import, then the same run with the default SQLite store, in a temporary
  ``ITERFLOW_HOME`` (a new store file each time: the schema is created too);
- the same with a store that exists already (made by an earlier run, as after
  the first run ever): only its version is checked.

The variants run in turns, ``--repeat`` times each; medians are printed, with
the median CPU time of the same processes (steadier on a busy machine).

The children read byte-compiled modules, as an installed package does: a
private ``PYTHONPYCACHEPREFIX`` is filled by one warm-up process first (a
checkout run with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile
iterflow from source in every process). ``--no-bytecode-cache`` leaves the
environment as it is.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeat 21
    python benchmarks/startup.py --importtime store   # its slowest imports (-X importtime)
    python benchmarks/startup.py --no-bytecode-cache  # as the environment has it
    python benchmarks/startup.py --baseline ../other-checkout/src   # before/after, in turns
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
cpu = time.process_time()
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
print((imported - start) * 1e3, (end - start) * 1e3, (time.process_time() - cpu) * 1e3)
"""

VARIANTS = {
    "import": "import iterflow",
    "none": "import + 10-iteration loop, store=None",
    "store": "import + 10-iteration loop, SQLite store",
    "existing": "the same, the store file exists already",
}
# Runs whose store is made new for each process, and the one reused by "existing".
_FRESH_HOME = {"store"}
_EXISTING_HOME = "existing-store"


def child_env(home: str, pycache: str | None, src: str | None = None) -> dict[str, str]:
    """The environment of a measured child: its home, the bytecode cache if any, and
    ``src`` (another checkout's ``src``, for ``--baseline``) first on its path."""
    env = dict(os.environ, ITERFLOW_HOME=home)
    if pycache is not None:
        env["PYTHONPYCACHEPREFIX"] = pycache
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def warm_up(home: str, pycache: str | None, src: str | None = None) -> None:
    """Fill the bytecode cache (every module a store run imports), and make the
    store the "existing" variant reuses (at ``home``)."""
    env = child_env(home, pycache, src)
    if pycache is not None:  # --no-bytecode-cache leaves the environment as it is
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-c", CHILD.format(mode="store")], env=env, check=True,
        capture_output=True,
    )


def run_child(
    mode: str, home: str, pycache: str | None = None, src: str | None = None
) -> tuple[float, float, float]:
    """(ms to import, ms to the end, CPU ms to the end) of one fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(mode=mode)],
        env=child_env(home, pycache, src),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def importtime(mode: str, home: str, top: int, pycache: str | None = None) -> None:
    env = child_env(home, pycache)
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


def report(name: str, times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Each variant's median wall time, its range, and its median CPU time."""
    print(f"  {name}")
    for mode, label in VARIANTS.items():
        values = sorted(times[mode])
        median = statistics.median(values)
        print(
            f"    {label:<42} {median:7.1f}   (min {values[0]:.1f}, max {values[-1]:.1f})"
            f"   CPU {statistics.median(cpu[mode]):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="fresh processes per variant")
    parser.add_argument(
        "--importtime", choices=list(VARIANTS), help="show one variant's slowest imports instead"
    )
    parser.add_argument("--top", type=int, default=25, help="rows of --importtime")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true",
        help="no warmed-up PYTHONPYCACHEPREFIX: modules load as the environment has them",
    )
    parser.add_argument(
        "--baseline", metavar="SRC",
        help="another checkout's src directory, measured in turns with this one (before/after)",
    )
    args = parser.parse_args()

    # Each tree measured: its name and the src put first on the children's path.
    trees: list[tuple[str, str | None]] = [("iterflow as imported here", None)]
    if args.baseline:
        trees.insert(0, (f"baseline {args.baseline}", os.path.abspath(args.baseline)))
    times = {name: {mode: [] for mode in VARIANTS} for name, _ in trees}
    cpu = {name: {mode: [] for mode in VARIANTS} for name, _ in trees}
    with tempfile.TemporaryDirectory() as base:
        pycache = None if args.no_bytecode_cache else os.path.join(base, "pycache")
        kept = {
            name: os.path.join(base, f"{_EXISTING_HOME}-{n}") for n, (name, _) in enumerate(trees)
        }
        for name, src in trees:
            warm_up(kept[name], pycache, src)
        if args.importtime:
            name = trees[-1][0]
            home = kept[name] if args.importtime == "existing" else os.path.join(base, "it")
            importtime(args.importtime, home, args.top, pycache)
            return
        for i in range(args.repeat):
            for mode in VARIANTS:
                for n, (name, src) in enumerate(trees):
                    # A new store for each "store" run; one kept store for "existing".
                    fresh = os.path.join(base, f"{mode}-{i}-{n}")
                    home = fresh if mode in _FRESH_HOME else kept[name]
                    _, wall, used = run_child(mode, home, pycache, src)
                    times[name][mode].append(wall)
                    cpu[name][mode].append(used)
    cache = "not cached" if pycache is None else "cached"
    print(f"start-up in a fresh process (bytecode {cache}), median of {args.repeat} (ms)")
    for name, _ in trees:
        report(name, times[name], cpu[name])


if __name__ == "__main__":
    main()
