"""``iterflow cancel`` on a parent run stops its child runs (subflows) too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import iterflow
from iterflow.store import open_store, request_cancel
from iterflow.store.children import child_runs, list_runs
from tests.durability.helpers import FlowScript, wait_for
from tests.subflows.test_cancel import FOREVER  # the same parent: children that loop on


@pytest.fixture
def script(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, ITERFLOW_HOME=str(home), ITERFLOW_HEARTBEAT="0.5")
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


def test_cancelling_a_parent_stops_its_children(script):
    proc = script.start("run")
    wait_for(lambda: len(script.side("spins")) >= 10, "the children to loop", proc=proc,
             script=script, timeout=60)
    store = open_store(script.url)
    parent = next(r for r in list_runs(store=store) if r.flow_name == "parent")
    kid = wait_for(lambda: child_runs(parent.run_id, store=store), "a child run", proc=proc,
                   script=script, timeout=60)[0]
    with pytest.raises(iterflow.errors.StoreError, match="is a child run"):
        request_cancel(kid.run_id, store=store)  # the parent is what to cancel
    done = subprocess.run([sys.executable, "-m", "iterflow", "cancel", parent.run_id],
                          env=dict(script.env, ITERFLOW_STORE_URL=script.url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    proc.wait(timeout=30)
    spins = len(script.side("spins"))
    time.sleep(0.3)
    assert len(script.side("spins")) == spins  # nothing loops on
    assert store.get_run(parent.run_id).state == "Cancelled"
    kids = child_runs(parent.run_id, store=store)
    assert len(kids) == 2
    assert {k.state for k in kids} <= {"Failed", "Cancelled"}
    # Both are over: asking again is refused.
    with pytest.raises(iterflow.errors.StoreError, match="already finished"):
        request_cancel(parent.run_id, store=store)
    store.close()
