"""Resume descends: a parent killed with SIGKILL inside a child resumes that child where it was.

A loop block runs one child flow run per iteration; each child loops five
times. The process is killed in the third child, at its third iteration.
Resuming the parent (from a fresh process) must not run the first two
children again, must continue the third child's run (same run id) at the
iteration after its last recorded one, and must then go on with the block.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import iterflow
from iterflow.runids import subflow_run_id
from iterflow.store import open_store
from iterflow.store.children import child_runs, list_runs
from tests.durability.helpers import FlowScript, kill, wait_for

NESTED = """
@task(checkpoint="every")
def step(x, k):
    i = iterflow.context.loop_index
    mark("steps", os.getpid(), k, i)
    if k == 2 and i == 2 and os.environ.get("WAIT_IN_THIRD"):
        wait_here("waiting")
    total = iterflow.context.get("loop_result", x) + 1
    if i < 4:
        raise LOOP(result=total)
    return total


@task
def at_least(x, n):
    return x >= n


with Flow("child") as child:
    step(Parameter("x"), Parameter("k"))

with Flow("parent") as flow:
    with iterflow.loop(initial=0, max_loops=10) as it:
        out = child(x=it.result, k=it.index)
        it.next(result=out, until=at_least(out, 20))
    final = at_least(it.final, 0)
"""


@pytest.fixture
def script(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    env["ITERFLOW_HOME"] = str(home)
    env.pop("ITERFLOW_STORE_URL", None)
    # The iterflow these tests import, whatever the working directory of the process.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(iterflow.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    made = FlowScript(tmp_path / "flow", NESTED, env)
    made.url = f"sqlite:///{home / 'iterflow.db'}"  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        made.kill_all()


def test_resuming_a_parent_killed_inside_its_third_child_continues_that_child(script):
    first = script.start("run", WAIT_IN_THIRD="1")
    wait_for(lambda: script.side("waiting"), "the third child to wait", proc=first,
             script=script, timeout=60)
    kill(first)

    store = open_store(script.url)
    # Links are written in batches (like task runs): the kill may have beaten the last.
    [parent] = [r for r in list_runs(store=store) if r.flow_name == "parent"]
    assert parent.state == "Crashed"
    children = [r for r in list_runs(limit=None, include_children=True, store=store)
                if r.flow_name == "child"]
    assert sorted(r.state for r in children) == ["Crashed", "Success", "Success"]

    out = script.run("resume", parent.run_id, timeout=120)
    assert out["state"] == "Success", out
    assert out["results"]["at_least"] is True

    steps = [(int(pid), int(k), int(i)) for pid, k, i in script.side("steps")]
    killed, resumed = first.pid, {pid for pid, _, _ in steps} - {first.pid}
    assert len(resumed) == 1
    in_first = [(k, i) for pid, k, i in steps if pid == killed]
    in_second = [(k, i) for pid, k, i in steps if pid != killed]
    assert in_first == [(0, i) for i in range(5)] + [(1, i) for i in range(5)] + [
        (2, 0), (2, 1), (2, 2)
    ]
    # The first two children are not run again; the third goes on at its iteration 2
    # (the one the kill interrupted: it had not recorded a LOOP), then the fourth runs.
    assert in_second == [(2, 2), (2, 3), (2, 4)] + [(3, i) for i in range(5)]

    after = {c.block_index: c for c in child_runs(parent.run_id, store=store)}
    assert sorted(after) == [0, 1, 2, 3]
    assert all(c.state == "Success" for c in after.values())
    # The third child kept its run id: it was resumed, not started again.
    crashed = next(r for r in children if r.state == "Crashed")
    assert after[2].run_id == crashed.run_id == subflow_run_id(after[2].parent_task_run_id)
    assert {after[0].run_id, after[1].run_id} == {
        r.run_id for r in children if r.state == "Success"
    }
    assert len(list_runs(limit=None, include_children=True, store=store)) == 5
    # Every child is linked now: only the parent is a top-level run.
    assert [r.run_id for r in list_runs(store=store)] == [parent.run_id]
    history = store.iterations(after[2].run_id, "step")
    assert [h.loop_index for h in history if h.state == "Looped"] == [0, 1, 2, 3]
