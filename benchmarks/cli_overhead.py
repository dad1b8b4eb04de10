"""What the command line costs: live progress on a tight loop, and start-up time.

1. A task that loops N times (100,000 by default) and does nothing else runs
   through ``iterflow run`` under a pseudo-terminal, so rich draws the live
   display, and again with ``--quiet`` (no display). Target: progress costs
   at most 10%. Both record to the run store, as a user's run does; the same
   pair without the store (``--no-store``) is shown too, for information: there
   ``--quiet`` leaves the run with no event sink at all, so the engine skips
   making events and the difference is the cost of events, not of the display.
2. ``iterflow --help`` and ``python -c "import iterflow"``: target 150 ms each.
3. ``iterflow show RUN --iterations spin`` on the N-iteration run: the table
   (first and last iterations, a count between), a page of 1,000 from the
   middle, and ``--json`` (every state, streamed). Target: 2 s at 100,000,
   and memory (peak RSS) that does not grow with N.
4. ``ProgressDisplay.handle`` on the hot path (an iteration's Running/Looped
   events), in nanoseconds per event.

Each subprocess is timed by wall clock and by its CPU time (user + system, from
``os.wait4``, so the store's writer thread and the display's refresh thread
count). Runs are taken in turns and the best of ``--repeat`` is kept, so that
other work on the machine disturbs the ratios as little as possible.

    python benchmarks/cli_overhead.py                 # N = 100,000, best of 5
    python benchmarks/cli_overhead.py -n 20000 --repeat 3
    python benchmarks/cli_overhead.py --show-only    # only 3., on one recorded run
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FLOW = """
import iterflow
from iterflow import LOOP, Flow, Parameter, task

@task
def spin(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return n

with Flow("cli overhead") as flow:
    spin(Parameter("n"))
"""

_SCRIPT = Path(sys.executable).parent / "iterflow"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "iterflow"]


def timed(args: list[str], env: dict[str, str], cwd: Path, terminal: bool) -> tuple[float, float]:
    """Run ``args`` to its end; (wall seconds, CPU seconds). Under a pty if ``terminal``."""
    start = time.perf_counter()
    if terminal:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower,
                                env=env, cwd=cwd, close_fds=True)
        os.close(follower)
        while True:  # drain the terminal, or the child blocks once its buffer fills
            ready, _, _ = select.select([leader], [], [], 0.1)
            try:
                if ready and not os.read(leader, 65536):
                    break
            except OSError:
                break
            if not ready and proc.poll() is not None:
                break
        os.close(leader)
    else:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def best_in_turns(cases: dict[str, tuple[list[str], bool]], env, cwd, repeat: int):
    """{name: (best wall, best CPU, median wall)}, running the cases in turns."""
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (args, terminal) in cases.items():
            wall, cpu = timed(args, env, cwd, terminal)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {n: (min(walls[n]), min(cpus[n]), statistics.median(walls[n])) for n in cases}


def show_costs(env: dict[str, str], cwd: Path, n: int, repeat: int) -> None:
    """Time ``iterflow show --iterations`` on the latest recorded run (section 3)."""
    listed = subprocess.run([*COMMAND, "runs", "--json", "-n", "1"], env=env, cwd=cwd,
                            capture_output=True, text=True, check=True)
    run_id = json.loads(listed.stdout)[0]["run_id"]
    show = [*COMMAND, "show", run_id, "--iterations", "spin"]
    cases = {
        "table (first/last, count)": show,
        "table, --offset N/2 --limit 1000": [*show, "--offset", str(n // 2), "--limit", "1000"],
        "--json (all, streamed)": [*show, "--json"],
    }
    print(f"\niterflow show --iterations on the {n:,}-iteration run, best of {repeat} "
          f"(wall s / CPU s / peak RSS MB; target <= 2 s at 100,000)")
    for name, args in cases.items():
        best_wall, best_cpu, best_rss = float("inf"), float("inf"), 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{' '.join(args)} failed")
            best_wall = min(best_wall, time.perf_counter() - start)
            best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime)
            best_rss = max(best_rss, usage.ru_maxrss / 1024)
        print(f"  {name:<34} {best_wall:7.3f} {best_cpu:7.3f} {best_rss:7.1f}")


def handle_cost(events: int = 200_000) -> float:
    """Nanoseconds per hot-path ``handle()`` call (best of five passes)."""
    import io

    from rich.console import Console

    from iterflow.core.state import Looped, Running
    from iterflow.events import FlowRunEvent, TaskRunEvent
    from iterflow.progress import ProgressDisplay

    console = Console(file=io.StringIO(), force_terminal=True)
    display = ProgressDisplay(total_tasks=1, console=console, live=False)
    display.handle(FlowRunEvent("r", "f", Running()))
    display.handle(TaskRunEvent("r", "r/t", "t", "t", None, 0, Running(loop_index=0)))
    stream = [
        TaskRunEvent("r", "r/t", "t", "t", None, i // 2,
                     Running(loop_index=i // 2) if i % 2 == 0 else Looped(loop_index=i // 2))
        for i in range(events)
    ]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for event in stream:
            display.handle(event)
        best = min(best, time.perf_counter() - start)
    return best / events * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--show-only", action="store_true",
                        help="Record one run and time only `iterflow show --iterations`.")
    options = parser.parse_args()
    n = options.iterations

    with tempfile.TemporaryDirectory(prefix="iterflow-cli-bench-") as tmp:
        cwd = Path(tmp)
        (cwd / "spin.py").write_text(textwrap.dedent(FLOW))
        env = {**os.environ, "ITERFLOW_HOME": str(cwd / "home"), "TERM": "xterm-256color",
               "COLUMNS": "120", "LINES": "40"}
        env.pop("ITERFLOW_STORE_URL", None)
        env.pop("NO_COLOR", None)
        run = [*COMMAND, "run", "spin.py", "-p", f"n={n}"]
        timed([*COMMAND, "runs"], env, cwd, terminal=False)  # create the store once
        if options.show_only:
            timed([*run, "--quiet"], env, cwd, terminal=False)
            show_costs(env, cwd, n, options.repeat)
            return

        print(f"iterflow run: a {n:,}-iteration loop, best of {options.repeat} "
              f"(wall s / CPU s / median wall s)")
        loop_cases = {
            "store, live progress (pty)": (run, True),
            "store, --quiet (pty)": ([*run, "--quiet"], True),
            "no store, live progress (pty)": ([*run, "--no-store"], True),
            "no store, --quiet (pty)": ([*run, "--no-store", "--quiet"], True),
        }
        loops = best_in_turns(loop_cases, env, cwd, options.repeat)
        for name, (wall, cpu, median) in loops.items():
            print(f"  {name:<32} {wall:7.3f} {cpu:7.3f} {median:7.3f}")
        for label in ("store", "no store"):
            on, off = loops[f"{label}, live progress (pty)"], loops[f"{label}, --quiet (pty)"]
            print(f"  progress costs ({label}): {100 * (on[0] / off[0] - 1):+.1f}% wall, "
                  f"{100 * (on[1] / off[1] - 1):+.1f}% CPU"
                  + ("   (target <= 10%)" if label == "store" else ""))

        print(f"\nstart-up, best of {max(options.repeat, 10)} (wall ms / CPU ms / median wall ms;"
              f" target <= 150 ms)")
        startup = best_in_turns(
            {
                "iterflow --help": ([*COMMAND, "--help"], False),
                "python -c 'import iterflow'": ([sys.executable, "-c", "import iterflow"], False),
                "python -c 'pass' (baseline)": ([sys.executable, "-c", "pass"], False),
            },
            env, cwd, max(options.repeat, 10),
        )
        for name, (wall, cpu, median) in startup.items():
            print(f"  {name:<32} {wall * 1e3:7.1f} {cpu * 1e3:7.1f} {median * 1e3:7.1f}")
        show_costs(env, cwd, n, options.repeat)

    print(f"\nProgressDisplay.handle on the hot path: {handle_cost():.0f} ns per event "
          f"(two events per iteration)")


if __name__ == "__main__":
    main()
