"""Many child runs' states in one of the writer's batches: each run's rows come out whole.

A parent mapping a child flow over many inputs hands the writer, in one batch,
the first and last states of many flow runs (often both of the same run) and
the same flow's task list again and again. They are written a statement per
kind of row, a run's states of one batch folded into one row; these tests
check that nothing of it is lost or reordered: every child ends ``Success``
with its own parameters, its shape and its end time, and the flow's row keeps
the latest task list.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from iterflow import Flow, Parameter, task
from iterflow.errors import RunTakenOver
from iterflow.store import open_store
from iterflow.store.batch import FLOW, LINK, BatchRecorder
from iterflow.store.children import ParentLink, child_runs, parents_of, record_parents
from iterflow.store.flow_rows import _fold
from iterflow.store.schema import flow_run_shapes, flow_runs, flows, state_transitions


@task
def double(x):
    return 2 * x


def test_a_map_of_many_children_records_each_child_run_whole(store_url):
    with Flow("doubler") as child:
        double(Parameter("x"))
    with Flow("parent") as parent:
        child.map(x=list(range(150)))
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    store = open_store(store_url)
    try:
        children = child_runs(state.run_id, store=store)
        assert len(children) == 150
        runs = {c.run_id: store.get_run(c.run_id) for c in children}
        assert {r.state for r in runs.values()} == {"Success"}
        assert all(r.ended is not None and r.ended >= r.started for r in runs.values())
        assert sorted(r.parameters["x"] for r in runs.values()) == list(range(150))
        assert all(r.flow_name == "doubler" for r in runs.values())
        # Each child's task runs are recorded, with the child's value.
        first = next(iter(runs))
        assert {t.task_slug: t.state for t in store.task_runs(first)} == {
            "x": "Success", "double": "Success",
        }
        with store.engine.connect() as conn:
            shapes = conn.execute(
                sa.select(flow_run_shapes.c.run_id).where(flow_run_shapes.c.run_id.in_(runs))
            ).scalars().all()
            assert set(shapes) == set(runs)
            tasks = conn.execute(sa.select(flows.c.tasks).where(flows.c.name == "doubler"))
            assert tasks.scalar_one() == [["x", "x"], ["double", "double"]]
    finally:
        store.close()


def test_a_child_flow_changed_between_runs_records_its_new_task_list(store_url):
    with Flow("grower") as child:
        double(Parameter("x"))
    with Flow("parent") as parent:
        child.map(x=[1, 2, 3])
    assert parent.run(store=store_url).is_successful()
    with child:
        double(3)  # a task added to the child after it ran
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    store = open_store(store_url)
    try:
        with store.engine.connect() as conn:
            tasks = conn.execute(sa.select(flows.c.tasks).where(flows.c.name == "grower"))
            assert [slug for slug, _ in tasks.scalar_one()] == ["x", "double", "double-2"]
        latest = child_runs(state.run_id, store=store)[0].run_id
        assert {t.task_slug for t in store.task_runs(latest)} == {"x", "double", "double-2"}
    finally:
        store.close()


def _flow_record(run_id: str, kind: str, at: float, finished: bool = False) -> tuple:
    return (FLOW, run_id, "f", kind, at, None, None, None, None, None, finished, None, None)


def test_a_batch_of_several_runs_refuses_all_when_one_was_taken_over(store_url):
    # A parent and its children share one writer: their owners are read in one
    # query, and one run resumed elsewhere stops the whole batch, naming that run.
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner="a" * 32)
        recorder.commit([_flow_record(f"run-{i}", "Running", 1.0 + i) for i in range(3)], 3)
        with store.engine.begin() as conn:
            conn.execute(sa.update(flow_runs).where(flow_runs.c.run_id == "run-1")
                         .values(owner="b" * 32, pid=4242, host="elsewhere"))
        with pytest.raises(RunTakenOver, match=r"run-1 .*pid 4242 on elsewhere"):
            recorder.commit(
                [_flow_record(f"run-{i}", "Success", 9.0, finished=True) for i in range(3)], 3
            )
        with store.engine.connect() as conn:
            states = dict(conn.execute(sa.select(flow_runs.c.run_id, flow_runs.c.state)).all())
        assert states == {"run-0": "Running", "run-1": "Running", "run-2": "Running"}
    finally:
        store.close()


def _state_record(run_id: str, kind: str, at: float, *, finished: bool = False,
                  message: str | None = None, params: dict | None = None,
                  source: str | None = None) -> tuple:
    return (FLOW, run_id, "f", kind, at, message, params, None, None, source, finished, None,
            None)


def test_a_runs_start_and_end_in_one_batch_make_one_row_as_two_would(store_url):
    # A child run often starts and ends within one batch: its states are folded into
    # one upsert of its row, which must come out as the two upserts in turn would.
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner="a" * 32)
        recorder.commit([
            _state_record("run-1", "Running", 1.0, params={"x": 1}, source="f.py:flow"),
            _state_record("run-1", "Success", 2.0, finished=True, message="done"),
        ], 2)
        run = store.get_run("run-1")
        assert (run.state, run.started, run.ended, run.message) == ("Success", 1.0, 2.0, "done")
        assert run.parameters == {"x": 1}
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(flow_runs).where(flow_runs.c.run_id == "run-1")).one()
            transitions = conn.execute(
                sa.select(state_transitions.c.kind, state_transitions.c.task_run)
                .order_by(state_transitions.c.id)
            ).all()
        # What only the first state carries stays: who drives it, where it came from.
        assert (row.owner, row.source, row.pid) == ("a" * 32, "f.py:flow", os.getpid())
        assert row.heartbeat is not None
        # A new run that starts and ends in one batch (a child run): its flow_runs row
        # (started, ended, state, message, checked above) is its whole history.
        assert [tuple(t) for t in transitions] == []
    finally:
        store.close()


def _flow_kinds(store, run_id: str) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(
            sa.select(state_transitions.c.kind)
            .join(flow_runs, flow_runs.c.id == state_transitions.c.flow_run)
            .where(flow_runs.c.run_id == run_id, state_transitions.c.task_run.is_(None))
            .order_by(state_transitions.c.id)
        ).scalars())


def test_a_new_runs_states_are_rows_unless_it_starts_and_ends_in_one_batch(store_url):
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner="a" * 32)
        # Still running at the batch's end: its Running is history.
        recorder.commit([_state_record("open", "Running", 1.0, params={})], 1)
        assert _flow_kinds(store, "open") == ["Running"]
        recorder.commit([_state_record("open", "Success", 2.0, finished=True)], 1)
        assert _flow_kinds(store, "open") == ["Running", "Success"]
        # Started and ended in one batch, beside a run that goes on: only the one
        # that goes on has state rows; the other's are its flow_runs row.
        recorder.commit([
            _state_record("short", "Running", 3.0, params={}),
            _state_record("long", "Running", 3.5, params={}),
            _state_record("short", "Failed", 4.0, finished=True, message="boom"),
            _state_record("odd", "Running", 5.0, params={}, message="started by hand"),
            _state_record("odd", "Success", 6.0, finished=True),
        ], 5)
        assert _flow_kinds(store, "short") == []
        short = store.get_run("short")
        assert (short.state, short.started, short.ended, short.message) == (
            "Failed", 3.0, 4.0, "boom")
        assert _flow_kinds(store, "long") == ["Running"]
        # A start with a message of its own says more than flow_runs: it stays.
        assert _flow_kinds(store, "odd") == ["Running", "Success"]
    finally:
        store.close()


def test_a_resumed_runs_states_in_one_batch_keep_what_it_recorded_first(store_url):
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner="a" * 32)
        recorder.commit([_state_record("run-1", "Running", 1.0, params={"x": 1},
                                       source="f.py:flow")], 1)
        recorder.commit([_state_record("run-1", "Failed", 2.0, finished=True, message="no")], 1)
        # Resumed: Running again (the original parameters come again, not recorded
        # twice: see writer), then Success, in one batch.
        recorder.commit([
            _state_record("run-1", "Running", 3.0),
            _state_record("run-1", "Success", 4.0, finished=True, message="done"),
        ], 2)
        run = store.get_run("run-1")
        assert (run.state, run.started, run.ended, run.message) == ("Success", 1.0, 4.0, "done")
        assert run.parameters == {"x": 1}
        with store.engine.connect() as conn:
            source = conn.execute(sa.select(flow_runs.c.source)).scalar_one()
        assert source == "f.py:flow"
    finally:
        store.close()


def test_folding_a_runs_rows_follows_each_rule():
    first = ({"a": "old", "b": "new", "c": "new_or_old", "d": "new"},
             {"run_id": "r", "a": None, "b": 1, "c": "x", "d": 5})
    rules, row = _fold(first, {"a": "old", "b": "new", "c": "new_or_old", "e": "new"},
                       {"run_id": "r", "a": 2, "b": 3, "c": None, "e": 7})
    assert row == {"run_id": "r", "a": 2, "b": 3, "c": "x", "d": 5, "e": 7}
    assert rules == {"a": "old", "b": "new", "c": "new_or_old", "d": "new", "e": "new"}
    # Keep-if-set after take-unless-NULL depends on the stored row: not folded.
    assert _fold(({"a": "new_or_old"}, {"a": None}), {"a": "old"}, {"a": 1}) is None


def test_links_written_in_a_batch_keep_those_already_recorded(store_url):
    # The link writer hands many links at once; a child linked before (a resumed
    # parent's, say) keeps its first link, and the new ones are all recorded.
    store = open_store(store_url)
    try:
        record_parents(store, [ParentLink("c0", "p", "p/sub/0", "sub", 0)])
        record_parents(store, [
            ParentLink(f"c{i}", "p2" if i == 0 else "p", f"p/sub/{i}", "sub", i, 3, 1)
            for i in range(300)
        ])
        links = parents_of([f"c{i}" for i in range(300)], store=store)
        assert len(links) == 300
        assert links["c0"] == ParentLink("c0", "p", "p/sub/0", "sub", 0)
        assert links["c7"] == ParentLink("c7", "p", "p/sub/7", "sub", 7, 3, 1)
    finally:
        store.close()


def test_a_childs_link_goes_in_with_the_batch_that_holds_its_rows(store_url):
    # A new child's link is queued in its parent's sink ahead of the child's first
    # state: one transaction writes both, so no recorded child lacks its link.
    store = open_store(store_url)
    try:
        recorder = BatchRecorder(store.write, 30.0, owner="a" * 32)
        recorder.commit([_state_record("parent", "Running", 1.0, params={})], 1)
        link = ParentLink(run_id="child", parent_run_id="parent",
                          parent_task_run_id="parent/t/0", task_slug="t", map_index=0,
                          loop_index=0)
        again = ParentLink(run_id="child", parent_run_id="parent",
                           parent_task_run_id="parent/t/0", task_slug="t", map_index=0,
                           loop_index=0)
        recorder.commit([
            (LINK, "parent", None, link, None),
            _state_record("child", "Running", 2.0, params={"x": 1}),
            _state_record("child", "Success", 3.0, finished=True),
            (LINK, "parent", None, again, None),  # recorded twice: harmless
        ], 2)
        [child] = child_runs("parent", store=store)
        assert (child.run_id, child.state, child.task_slug, child.map_index) == (
            "child", "Success", "t", 0)
        assert parents_of(["child"], store=store)["child"] == link
    finally:
        store.close()
