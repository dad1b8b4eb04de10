"""Plain helpers for the command-line tests: the command, a pty runner, flow sources.

Tests that need the run store are marked ``needs_store``: they skip, saying
so, in an installation without ``iterflow.store``.
"""

from __future__ import annotations

import importlib.util
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

HAVE_STORE = importlib.util.find_spec("iterflow.store.runstore") is not None
needs_store = pytest.mark.skipif(
    not HAVE_STORE, reason="needs the run store (iterflow.store), which is not installed yet"
)

_SCRIPT = Path(sys.executable).parent / "iterflow"
#: How to start the CLI: the console script when installed, else ``python -m iterflow``.
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "iterflow"]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


def run_in_pty(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30
) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdin/stdout/stderr; (exit code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{args} did not finish in {timeout} s")
    finally:
        os.close(leader)
    return proc.wait(timeout=5), b"".join(chunks).decode("utf-8", "replace")


# -- flow files used by several tests ---------------------------------------------------
ACCUMULATE = """
    import iterflow
    from iterflow import task, Flow, Parameter, LOOP

    @task
    def accumulate(x, iterations):
        result = x + iterflow.context.get("loop_result", 0)
        if iterflow.context.loop_index < iterations:
            iterflow.context.logger.info("partial sum %s", result)
            raise LOOP(result=result)
        return result

    @task(log_stdout=True)
    def report(total):
        print("total is", total)
        return total

    with Flow("looping accumulator") as flow:
        n = Parameter("n", default=5)
        report(accumulate(x=1, iterations=n))
"""

FAILING = """
    from iterflow import task, Flow

    @task
    def boom():
        raise ValueError("kaput")

    @task
    def after(x):
        return x

    with Flow("failing") as flow:
        after(boom())
"""

# Fails at iteration 3 of `looper` while the marker file is absent (and creates
# it), so the first run fails and a resume succeeds. Every run of `first` is
# appended to a log file, so a test can see it did not run again.
FLAKY = """
    import pathlib
    import iterflow
    from iterflow import task, Flow, LOOP

    HERE = pathlib.Path(__file__).parent

    @task
    def first():
        with open(HERE / "first.log", "a") as fh:
            fh.write("ran\\n")
        return 10

    @task
    def looper(x):
        i = iterflow.context.loop_index
        total = iterflow.context.get("loop_result", 0)
        with open(HERE / "iterations.log", "a") as fh:
            fh.write(f"{i}\\n")
        if i == 3 and not (HERE / "marker").exists():
            (HERE / "marker").write_text("failed once")
            raise RuntimeError("flaky at iteration 3")
        if i < 5:
            raise LOOP(result=total + x)
        return total

    with Flow("flaky") as flow:
        looper(first())
"""

# Loops until killed; sleeps a little per iteration so the heartbeat thread and
# the store keep up and the test's kill lands mid-loop.
FOREVER = """
    import time
    import iterflow
    from iterflow import task, Flow, LOOP

    @task
    def spin():
        time.sleep(0.005)
        raise LOOP(result=iterflow.context.loop_index)

    with Flow("forever") as flow:
        spin()
"""
