"""Cancelling a parent (SIGTERM) stops its children's loops, on a thread pool too."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import iterflow
from iterflow.store import open_store
from iterflow.store.children import child_runs, list_runs
from tests.durability.helpers import FlowScript, wait_for

FOREVER = """
from iterflow.executors import ThreadExecutor


@task
def spin(x):
    i = iterflow.context.loop_index
    mark("spins", i)
    time.sleep(0.02)
    if i < 100_000:
        raise LOOP(result=i)
    return i


with Flow("spinner") as child:
    spin(Parameter("x"))

with Flow("parent", executor=ThreadExecutor(max_workers=2)) as flow:
    child.map(x=[1, 2])
"""


@pytest.fixture
def script(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    env["ITERFLOW_HOME"] = str(home)
    env.pop("ITERFLOW_STORE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(iterflow.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    made = FlowScript(tmp_path / "flow", FOREVER, env)
    made.url = f"sqlite:///{home / 'iterflow.db'}"  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        made.kill_all()


def test_sigterm_to_a_parent_on_threads_stops_its_children_and_records_them(script):
    proc = script.start("run")
    wait_for(lambda: len(script.side("spins")) >= 10, "the children to loop", proc=proc,
             script=script, timeout=60)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    spins = len(script.side("spins"))
    time.sleep(0.3)
    assert len(script.side("spins")) == spins  # nothing loops on after the process ended
    store = open_store(script.url)
    [parent] = list_runs(store=store)
    assert parent.state == "Cancelled"
    kids = child_runs(parent.run_id, store=store)
    assert len(kids) == 2
    # Stopped and recorded, not left looking alive or crashed: resumable like the parent.
    assert {k.state for k in kids} <= {"Failed", "Cancelled"}
