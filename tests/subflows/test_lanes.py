"""A child run's states reach the store as values (lanes), and are recorded as its events were.

A child run of a subflow hands its flow-run states (``EventBus.flow_lane``,
``StoreSink.record_flow``) and its Parameters' values (the task lane) to its
parent's sink without making events. What the store holds must not tell the
two ways apart: the same runs, rows and links as with every state an event.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from iterflow import Flow, Parameter, loop, task
from iterflow.core.state import Pending, Running
from iterflow.events import EventBus, FlowRunEvent
from iterflow.runtime import run_flow
from iterflow.store import open_store
from iterflow.store.schema import flow_runs, flows, state_transitions, task_runs
from iterflow.store.writer import StoreSink
from tests.blocks.tasks import add, at_least


@task
def first(x, tag):
    return x


@task
def refuses_b(x):
    if x == "b":
        raise ValueError(f"{x!r} is refused")
    return x


def parent_flow() -> Flow:
    with Flow("adder") as adder:
        # A parameter that is not plain JSON: recorded pickled beside its JSON form.
        first(add(Parameter("x"), 1), Parameter("tag", default=(1, 2)))
    with Flow("picky") as picky:
        refuses_b(Parameter("x"))
    with Flow("parent") as parent:
        adder(x=1)
        adder.map(x=[10, 20, 30])
        picky.map(x=["a", "b"])
        with loop(initial=0, max_loops=5) as it:
            body = adder(x=it.result)
            it.next(result=body, until=at_least(body, 3))
    return parent


def _rows(rows) -> list:
    return sorted(rows, key=repr)  # None beside values: sorted by their text


def recorded(url: str) -> dict[str, list]:
    """What the store holds, without ids, times and owners (which differ run to run)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        runs = {r.id: r.run_id for r in conn.execute(sa.select(flow_runs.c.id, flow_runs.c.run_id))}
        tasks = {r.id: r.task_run_id
                 for r in conn.execute(sa.select(task_runs.c.id, task_runs.c.task_run_id))}
        out = {
            "flow_runs": _rows(
                # Parameters by name: their order follows flow.parameters(), a set.
                (r.run_id, r.flow_name, r.state, r.message,
                 json.dumps(r.parameters, sort_keys=True), r.source,
                 r.ended is not None)
                for r in conn.execute(sa.select(flow_runs))
            ),
            "task_runs": _rows(
                (r.task_run_id, r.flow_run_id, r.task_slug, r.task_name, r.map_index, r.state,
                 r.loop_count, r.loop_index, r.message, r.task_run_name)
                for r in conn.execute(sa.select(task_runs))
            ),
            # A failure's pickled exception carries its traceback's frames, which are the
            # engine's path to the call (run_plain's or the driver's), not the record's.
            "states": _rows(
                (runs[r.flow_run], tasks.get(r.task_run), r.kind, r.loop_index, r.block_index,
                 r.message, r.serializer, None if r.kind == "Failed" else r.data, r.preview,
                 r.label)
                for r in conn.execute(sa.select(state_transitions))
            ),
            "flows": _rows((r.name, repr(r.tasks)) for r in conn.execute(sa.select(flows))),
            "links": _rows(tuple(r) for r in conn.execute(sa.text(
                "SELECT run_id, parent_run_id, parent_task_run_id, task_slug, map_index, "
                "loop_index, block_index FROM flow_run_parents"))),
            "shapes": _rows(tuple(r) for r in conn.execute(sa.text(
                "SELECT run_id, shape FROM flow_run_shapes"))),
        }
    engine.dispose()
    return out


def test_child_runs_record_through_the_lanes_what_their_events_record(tmp_path, monkeypatch):
    lanes = f"sqlite:///{tmp_path / 'lanes.db'}"
    state = parent_flow().run(store=lanes, run_id="the-parent")
    assert state.is_failed()  # picky's child for "b" failed, and so its task
    with monkeypatch.context() as m:
        m.setattr(EventBus, "flow_lane", lambda self: None)
        m.setattr(StoreSink, "task_lane", lambda self, slug, serializer: None)
        events = f"sqlite:///{tmp_path / 'events.db'}"
        assert parent_flow().run(store=events, run_id="the-parent").name == state.name
    got, want = recorded(lanes), recorded(events)
    assert got["links"] and len(got["flow_runs"]) == 1 + 1 + 3 + 2 + 3
    for table in want:
        assert got[table] == want[table], table
    open_store(lanes).close()


def test_the_flow_lane_is_the_only_sinks_own():
    class Lane:
        def handle(self, event):
            pass

        def record_flow(self, *values):
            pass

    class Plain:
        def handle(self, event):
            pass

    lane = Lane()
    assert EventBus([lane]).flow_lane() == lane.record_flow
    assert EventBus([lane, Plain()]).flow_lane() is None  # the event is made for both
    assert EventBus([Plain()]).flow_lane() is None


def test_a_flow_state_handler_sees_the_first_move_from_pending():
    seen = []

    def handler(flow, old, new):
        seen.append((type(old), type(new)))
        return new

    with Flow("handled", state_handlers=[handler]) as f:
        add(1, 2)
    events = []

    class Sink:
        def handle(self, event):
            if isinstance(event, FlowRunEvent):
                events.append(event.state.name)

    assert run_flow(f, store=None, sinks=[Sink()]).is_successful()
    assert seen[0] == (Pending, Running)
    assert events == ["Running", "Success"]
