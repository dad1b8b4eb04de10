"""What a resumed run gets from the store, and which runs may be resumed."""

from __future__ import annotations

import pickle
import time

import pytest
import sqlalchemy as sa

import iterflow
from iterflow.errors import RunNotResumable
from iterflow.states import (
    Cached,
    Cancelled,
    Failed,
    Looped,
    Mapped,
    Running,
    Skipped,
    Success,
)
from iterflow.store import CheckpointSource, open_store
from iterflow.store.runstore import close_checkpoint_stores

from .helpers import RunEvents


def age_heartbeat(store, run_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE flow_runs SET heartbeat = :h WHERE run_id = :r"),
            {"h": time.time() - 3600, "r": run_id},
        )


def crashed_run(sink) -> RunEvents:
    """A run that stopped mid-way: a bit of everything a resume must sort out."""
    run = RunEvents(sink)
    run.start(parameters={"n": 5, "name": "x"})
    run.loop("done", [1, 2], final={"total": 3})                      # finished, looped
    run.task("cached", Cached(result="from cache", loop_count=1))       # finished, cached
    run.task("skipped", Skipped("branch not taken", loop_count=0))      # finished, skipped
    run.loop("looping", [10, 20, 30], end=Running(loop_index=3))       # mid-loop
    run.loop("broken", [7], end=Failed("boom", loop_count=2))          # failed after a loop
    run.task("never", Running())                                       # started, no Looped
    run.task("none", Running())
    run.task("none", Looped(result=None, loop_index=0))                # LOOP() without result
    children = []
    for i in range(3):                                                 # mapped, one failed
        end = Failed("child failed") if i == 1 else Success(result=i * 100, loop_count=1)
        run.task("mapped", Running(), map_index=i)
        run.task("mapped", end, map_index=i)
        children.append(end)
    run.task("mapped", Mapped(map_states=children))
    ok_children = []
    for i in range(2):                                                 # mapped, all good
        ok_children.append(Success(result=f"c{i}", loop_count=1))
        run.task("fine", ok_children[-1], map_index=i)
    run.task("fine", Mapped(map_states=ok_children))
    return run


def test_resume_point_contents(store, sink):
    run = crashed_run(sink)
    sink.flush()
    point = store.resume_point(run.run_id)

    assert point.run_id == run.run_id
    assert point.parameters == {"n": 5, "name": "x"}
    finished = point.finished
    assert set(finished) == {
        ("done", None), ("cached", None), ("skipped", None),
        ("mapped", 0), ("mapped", 2), ("fine", 0), ("fine", 1), ("fine", None),
    }
    assert type(finished[("done", None)]) is Success
    assert finished[("done", None)].result == {"total": 3}
    assert finished[("done", None)].loop_count == 3
    assert type(finished[("cached", None)]) is Cached
    assert finished[("cached", None)].result == "from cache"
    assert type(finished[("skipped", None)]) is Skipped
    assert finished[("skipped", None)].message == "branch not taken"
    assert finished[("mapped", 2)].result == 200
    parent = finished[("fine", None)]
    assert type(parent) is Mapped and parent.result == ["c0", "c1"]
    assert [c.result for c in parent.map_states] == ["c0", "c1"]

    assert point.loops == {
        ("looping", None): (3, 30),
        ("broken", None): (1, 7),
        ("none", None): (1, None),
    }
    assert point.iterations == {}


def test_resume_point_accepts_a_prefix_and_refuses_unknown_runs(store, sink):
    run = crashed_run(sink)
    sink.flush()
    assert store.resume_point(run.run_id[:10]).run_id == run.run_id
    with pytest.raises(RunNotResumable, match="No run 'nope'"):
        store.resume_point("nope")


def test_parameters_that_are_not_json_come_back_exactly(store, sink):
    run = RunEvents(sink)
    run.start(parameters={"pair": (1, 2), "when": b"\x00raw"})
    sink.flush()
    assert store.get_run(run.run_id).parameters == {"pair": [1, 2], "when": "b'\\x00raw'"}
    assert store.resume_point(run.run_id).parameters == {"pair": (1, 2), "when": b"\x00raw"}


def test_block_iterations_are_grouped_by_prefix(store, sink):
    # A loop block "blk" (a task run like a looping task) whose iteration 2 was
    # running: its body task runs live under "<block task run id>/<k>/".
    run = RunEvents(sink)
    run.start()
    block = run.task_run_id("blk")
    run.loop("blk", ["carry0", "carry1"], end=Running(loop_index=2))
    for k, end in ((0, Success(result="a0")), (1, Success(result="a1"))):
        run.task("a", end, prefix=f"{block}/{k}", block_index=k)
    run.task("a", Success(result="a2"), prefix=f"{block}/2", block_index=2)
    run.task("b", Running(), prefix=f"{block}/2", block_index=2)
    run.task("b", Looped(result="b0", loop_index=0), prefix=f"{block}/2", block_index=2)
    sink.flush()
    point = store.resume_point(run.run_id)
    assert point.loops == {("blk", None): (2, "carry1")}
    assert point.finished == {}  # body task runs are not top-level task runs
    assert list(point.iterations) == [f"{block}/2"]  # finished iterations are left out
    inside = point.iterations[f"{block}/2"]
    assert {k: s.result for k, s in inside.finished.items()} == {("a", None): "a2"}
    assert inside.loops == {("b", None): (1, "b0")}


def test_resumed_run_keeps_its_first_record(store, sink):
    run = RunEvents(sink)
    run.start(parameters={"n": 1}, source="flows.py:flow")
    run.loop("t", [1], end=Failed("boom", loop_count=2))
    run.finish(Failed("task failed"))
    sink.flush()
    first = store.get_run(run.run_id)

    resumed = RunEvents(store.sink(), run_id=run.run_id)
    # As flow.run(resume=...) does: claim the run for the sink that records it.
    store.check_resumable(run.run_id, claim=True, owner=resumed.sink.owner)
    resumed.start(parameters={"n": 1}, resumed=True)
    resumed.task("t", Running(loop_index=1), loop_index=1)
    resumed.task("t", Success(result=5, loop_count=2), loop_index=1)
    resumed.finish()
    resumed.sink.close()
    again = store.get_run(run.run_id)
    assert (again.state, again.started, again.source) == ("Success", first.started,
                                                          "flows.py:flow")
    assert again.ended > first.ended
    assert [(h.state, h.loop_index) for h in store.iterations(run.run_id, "t")] == [
        ("Looped", 0), ("Failed", 1), ("Success", 1),
    ]
    assert store.task_runs(run.run_id)[0].state == "Success"


@pytest.mark.parametrize(
    ("final", "resumable"),
    [(Failed("x"), True), (Cancelled("Ctrl-C"), True), (Success(), False)],
)
def test_check_resumable_by_final_state(store, sink, final, resumable):
    run = RunEvents(sink)
    run.start()
    run.finish(final)
    sink.flush()
    if resumable:
        assert store.check_resumable(run.run_id).state == final.name
    else:
        with pytest.raises(RunNotResumable, match="already finished successfully"):
            store.check_resumable(run.run_id)


def test_check_resumable_refuses_a_live_run_and_accepts_a_crashed_one(store, sink):
    run = RunEvents(sink)
    run.start()
    sink.flush()
    with pytest.raises(RunNotResumable, match=r"still running.*two processes"):
        store.check_resumable(run.run_id)
    sink.close()
    age_heartbeat(store, run.run_id)  # as if this process had died long ago
    assert store.check_resumable(run.run_id).state == "Crashed"
    with pytest.raises(RunNotResumable, match="No run 'unknown'"):
        store.check_resumable("unknown")


def test_claiming_a_run_lets_only_one_process_resume_it(store, sink):
    run = RunEvents(sink)
    run.start()
    run.finish(Failed("boom"))
    sink.flush()
    store.check_resumable(run.run_id, claim=True)
    info = store.get_run(run.run_id)
    assert (info.state, info.ended) == ("Running", None)
    with pytest.raises(RunNotResumable, match="still running"):
        store.check_resumable(run.run_id, claim=True)


def test_last_loop_and_the_checkpoint_source(store_url, store, sink):
    run = RunEvents(sink)
    run.start()
    run.loop("t", ["a", "b"], end=Running(loop_index=2))
    run.loop("m", [{"x": 1}], end=Running(loop_index=1), map_index=3)
    run.task("fresh", Running())
    block = run.task_run_id("blk")
    inner = run.task_run_id("t", prefix=f"{block}/0")
    run.task("t", Looped(result="inner", loop_index=9), prefix=f"{block}/0", loop_index=9)
    sink.flush()
    assert store.last_loop(run.task_run_id("t")) == (2, "b")  # the block's "t" is not it
    assert store.last_loop(inner) == (10, "inner")
    assert store.last_loop(run.task_run_id("m", 3)) == (1, {"x": 1})
    assert store.last_loop(run.task_run_id("m")) is None
    assert store.last_loop(run.task_run_id("fresh")) is None
    assert store.last_loop(run.task_run_id("t", prefix=f"{block}/1")) is None

    source = pickle.loads(pickle.dumps(store.checkpoint_source()))
    assert source == CheckpointSource(store_url)
    try:
        assert source.last_loop(run.task_run_id("t")) == (2, "b")
        assert source.last_loop(inner) == (10, "inner")
    finally:
        close_checkpoint_stores()


@iterflow.task
def tally(n):
    """Loops until loop_index reaches ``n``; each iteration's result names it."""
    ctx = iterflow.context
    if ctx.loop_index < n:
        raise iterflow.LOOP(result=f"{ctx.get('block_index', 'top')}:{ctx.loop_index}")
    return "done"


@iterflow.task
def plus(a, b):
    return a + b


@iterflow.task
def at_least(i, n):
    return i >= n


def test_last_loop_by_task_run_id_after_a_real_run(store_url, store):
    # A top-level task run, mapped children, and a body task whose two block
    # iterations record task runs with the same slug: each id finds its own Looped.
    with iterflow.Flow("where loops got to") as flow:
        top = tally(2)
        mapped = tally.map([1, 3])
        with iterflow.loop(initial=0, max_loops=5) as it:
            body = tally(plus(it.index, 1))                 # loops once, then twice
            it.next(result=plus(it.result, 1), until=at_least(it.index, 1))
    state = flow.run(store=store_url)
    assert state.is_successful()
    run_id = state.run_id
    ids: dict = {}
    for r in store.task_runs(run_id):
        ids.setdefault((r.task_slug, r.map_index), []).append(r.task_run_id)
    assert ids[(top.slug, None)] == [f"{run_id}/{top.slug}"]
    assert sorted(ids[(mapped.slug, 0)] + ids[(mapped.slug, 1)]) == [
        f"{run_id}/{mapped.slug}/0", f"{run_id}/{mapped.slug}/1",
    ]
    first, second = sorted(ids[(body.slug, None)])
    assert first.endswith(f"/0/{body.slug}") and second.endswith(f"/1/{body.slug}")

    assert store.last_loop(f"{run_id}/{top.slug}") == (2, "top:1")
    assert store.last_loop(f"{run_id}/{mapped.slug}/0") == (1, "top:0")
    assert store.last_loop(f"{run_id}/{mapped.slug}/1") == (3, "top:2")
    assert store.last_loop(first) == (1, "0:0")
    assert store.last_loop(second) == (2, "1:1")
    assert store.last_loop(f"{run_id}/{mapped.slug}") is None  # the parent never looped
    block = first[: -len(f"/0/{body.slug}")]
    assert store.last_loop(f"{block}/2/{body.slug}") is None  # an iteration never run


def test_a_result_that_cannot_be_loaded_makes_the_run_not_resumable(store_url, store, sink):
    from .test_writer import Bomb

    run = RunEvents(sink)
    run.start()
    run.loop("t", [Bomb()], end=Running(loop_index=1))
    sink.flush()
    with open_store(store_url) as other, pytest.raises(
        RunNotResumable, match=r"cannot be loaded.*RuntimeError"
    ):
        other.resume_point(run.run_id)
