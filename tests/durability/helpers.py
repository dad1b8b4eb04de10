"""Flow files run in fresh processes, side files, and waiting for progress.

A flow file is :data:`PRELUDE` + the test's flow + :data:`MAIN`::

    python flowfile.py run "{'n': 600}"      # flow.run(parameters=...)
    python flowfile.py resume RUN_ID         # flow.run(resume=RUN_ID)
    RUN_ID=ID python flowfile.py run         # flow.run(run_id=ID)

It prints one JSON line: ``{"run_id", "state", "results": {task name: result}}``.
Tasks write what they do to *side files* beside the flow file with
``mark(name, *values)``: one line per call, fsync'ed before the task goes on,
so a side file survives a SIGKILL and shows exactly what ran.
"""

from __future__ import annotations

import json
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRELUDE = '''\
import ast
import json
import os
import signal
import sys
import time

import iterflow
from iterflow import LOOP, Flow, Parameter, task, unmapped

HERE = os.path.dirname(os.path.abspath(__file__))


def mark(name, *values):
    """Append a line to the side file HERE/name; it is on disk when this returns."""
    with open(os.path.join(HERE, name), "a") as fh:
        fh.write(" ".join(str(v) for v in values) + "\\n")
        fh.flush()
        os.fsync(fh.fileno())


def wait_here(name):
    """Say so in the side file `name`, then wait to be killed."""
    mark(name, os.getpid())
    time.sleep(60)
    raise RuntimeError("the test never killed this process")


def wait_for_file(name, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(HERE, name)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never appeared")
        time.sleep(0.005)

'''

MAIN = """

def main():
    # A process started without job control may inherit SIGINT ignored; in a
    # terminal Ctrl-C raises KeyboardInterrupt, which is what the tests play.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.argv[1] == "resume":
        state = flow.run(resume=sys.argv[2])
    else:
        state = flow.run(parameters=ast.literal_eval(sys.argv[2]) if len(sys.argv) > 2 else None,
                         run_id=os.environ.get("RUN_ID"))
    results = {t.name: s.result for t, s in state.result.items()}
    print(json.dumps({"run_id": state.run_id, "state": state.name, "results": results},
                     default=repr))


if __name__ == "__main__":
    main()
"""


class FlowScript:
    """A flow file in its own directory, and the processes running it."""

    def __init__(self, directory: Path, body: str, env: dict[str, str]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.path = directory / "flowfile.py"
        self.path.write_text(PRELUDE + textwrap.dedent(body) + MAIN)
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """Start ``python flowfile.py ARGS`` with extra environment ``env``."""
        n = len(self.procs)
        out = open(self.dir / f"stdout.{n}", "w")  # noqa: SIM115 - closed after Popen
        err = open(self.dir / f"stderr.{n}", "w")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, str(self.path), *args],
                cwd=self.dir,
                env={**self.env, **env},
                stdout=out,
                stderr=err,
            )
        finally:
            out.close()
            err.close()
        proc.number = n  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen) -> tuple[str, str]:
        n = proc.number  # type: ignore[attr-defined]
        return (self.dir / f"stdout.{n}").read_text(), (self.dir / f"stderr.{n}").read_text()

    def finish(self, proc: subprocess.Popen, timeout: float = 60) -> dict[str, Any]:
        """Wait for ``proc``; it must succeed. Its JSON line."""
        code = proc.wait(timeout=timeout)
        out, err = self.output(proc)
        assert code == 0, f"flow process exited with {code}:\n{err[-3000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def run(self, *args: str, timeout: float = 60, **env: str) -> dict[str, Any]:
        """Run ``python flowfile.py ARGS`` to its end; it must succeed. Its JSON line."""
        return self.finish(self.start(*args, **env), timeout)

    def side(self, name: str) -> list[list[str]]:
        """The lines of a side file, split (missing file: no lines)."""
        try:
            text = (self.dir / name).read_text()
        except FileNotFoundError:
            return []
        # A line still being written has no newline yet: leave it out.
        return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def load(self) -> dict[str, Any]:
        """The flow file's globals, loaded in this process (``main`` is not run)."""
        return runpy.run_path(str(self.path))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def wait_for(
    condition: Callable[[], Any],
    what: str,
    *,
    timeout: float = 30.0,
    proc: subprocess.Popen | None = None,
    script: FlowScript | None = None,
) -> Any:
    """Poll ``condition`` until it is true; fail naming ``what`` (and why ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            err = script.output(proc)[1] if script is not None else ""
            raise AssertionError(
                f"the flow process exited ({proc.returncode}) before {what}:\n{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def kill(proc: subprocess.Popen, signum: int = signal.SIGKILL, timeout: float = 30) -> int:
    """Send ``signum`` to ``proc`` and reap it (so it no longer counts as alive)."""
    proc.send_signal(signum)
    return proc.wait(timeout=timeout)
