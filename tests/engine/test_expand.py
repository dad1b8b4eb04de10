"""Unrolling: run_task_run drives one task run's loop; expand_map computes map children."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, flatten, task, unmapped
from iterflow.engine.expand import TaskRunSpec, run_task_run
from iterflow.engine.mapping import NOTHING, expand_map
from iterflow.errors import MapError, SerializationError
from iterflow.events import TaskRunEvent
from iterflow.signals import LOOP
from iterflow.states import Failed, Looped, Mapped, Skipped, Success, TriggerFailed


def spec_for(fn, inputs=None, map_index=None, start=0, loop_result=NOTHING, **options):
    t = task(fn, name="t", **options)
    t.slug = "t"
    return TaskRunSpec(
        task=t,
        map_index=map_index,
        inputs=inputs or {},
        flow_run_id="run",
        task_run_id="run/t",
        base_context={"flow_name": "f", "flow_run_id": "run", "parameters": {}},
        start_loop_index=start,
        loop_result=loop_result,
    )


def countdown(n):
    i = iterflow.context.loop_index
    if i < n:
        raise LOOP(result=iterflow.context.get("loop_result", 0) + i)
    return iterflow.context.get("loop_result", 0)


def test_run_task_run_without_sinks_or_handlers_returns_the_final_state():
    state = run_task_run(spec_for(countdown, {"n": 4}))
    assert isinstance(state, Success)
    assert (state.result, state.loop_count) == (0 + 1 + 2 + 3, 5)


def test_run_task_run_emits_every_transition_as_an_event():
    events = []
    state = run_task_run(spec_for(countdown, {"n": 2}), events.append)
    assert all(isinstance(e, TaskRunEvent) for e in events)
    assert [(e.state.name, e.loop_index) for e in events] == [
        ("Running", 0), ("Looped", 0), ("Running", 1), ("Looped", 1), ("Running", 2),
        ("Success", 2),
    ]
    assert events[-1].state is state
    assert {(e.flow_run_id, e.task_run_id, e.task_slug, e.map_index) for e in events} == {
        ("run", "run/t", "t", None)
    }
    assert [e.state.result for e in events if e.state.is_looped()] == [0, 1]


def test_run_task_run_starts_where_the_spec_says():
    seen = []

    def record():
        seen.append((iterflow.context.loop_index, iterflow.context.get("loop_result", "absent")))
        if iterflow.context.loop_index < 5:
            raise LOOP(result="r")

    state = run_task_run(spec_for(record, start=3, loop_result="given"))
    assert seen == [(3, "given"), (4, "r"), (5, "r")]
    assert state.loop_count == 6


def test_the_context_is_reset_after_the_task_run():
    run_task_run(spec_for(countdown, {"n": 1}))
    assert "loop_index" not in iterflow.context


class Checkpoints:
    def __init__(self, found):
        self.found = found
        self.asked = []

    def last_loop(self, task_run_id):
        self.asked.append(task_run_id)
        return self.found


def test_a_checkpoint_source_ahead_of_the_spec_wins():
    seen = []

    def record():
        seen.append(iterflow.context.loop_index)

    spec = spec_for(record, start=1, loop_result=0)
    spec.checkpoint_source = Checkpoints((7, "saved"))
    assert run_task_run(spec).loop_count == 8
    assert seen == [7]
    assert spec.checkpoint_source.asked == ["run/t"]
    seen.clear()
    spec.checkpoint_source = Checkpoints((0, "old"))
    run_task_run(spec)
    assert seen == [1]


def test_a_sink_that_cannot_record_a_loop_result_fails_the_task_run():
    events = []

    def emit(event):
        if event.state.is_looped():
            raise SerializationError("cannot serialize loop result of type lock")
        events.append(event)

    state = run_task_run(spec_for(countdown, {"n": 3}), emit)
    assert isinstance(state, Failed)
    assert "cannot serialize" in state.message
    assert state.loop_count == 1
    assert [e.state.name for e in events] == ["Running", "Failed"]


def test_failed_message_names_task_flow_map_index_and_iteration():
    def boom():
        if iterflow.context.loop_index < 2:
            raise LOOP()
        raise RuntimeError("broken")

    state = run_task_run(spec_for(boom, map_index=3))
    assert state.message == (
        "task 't' (map_index 3) in flow 'f', iteration 2, failed: RuntimeError: broken"
    )
    assert isinstance(state.result, RuntimeError)
    assert "RuntimeError: broken" in state.traceback


# -- expand_map ---------------------------------------------------------------------
@task
def src():
    return 1


@task
def add(x, y):
    return x + y


def edges_of(flow, t):
    return flow.upstream_edges(t)


def test_expand_zips_mapped_arguments_and_passes_unmapped_ones_whole():
    with Flow("zip") as flow:
        a, b, c = src(), src(), src()
        m = add.map(a, unmapped(c))
    upstream = {a: Success(result=(1, 2, 3)), c: Success(result=[9])}
    children = expand_map(m, edges_of(flow, m), upstream, {"y": [9]})
    assert [inputs for inputs, _ in children] == [{"x": 1, "y": [9]}, {"x": 2, "y": [9]},
                                                  {"x": 3, "y": [9]}]
    assert all(ups == upstream for _, ups in children)
    assert b not in flow.upstream_tasks(m)


def test_expand_takes_a_mapped_upstream_element_wise_states_included():
    with Flow("element") as flow:
        a = src()
        m = add.map(a, y=unmapped(0))
    first, second = Success(result=1), Failed("boom", ValueError())
    children = expand_map(m, edges_of(flow, m), {a: Mapped(map_states=[first, second])}, {"y": 0})
    assert children[0][1][a] is first and children[1][1][a] is second
    assert children[0][0]["x"] == 1 and isinstance(children[1][0]["x"], ValueError)


def test_expand_flatten_keeps_a_failed_child_as_one_slot():
    with Flow("flatten") as flow:
        a = src()
        m = add.map(flatten(a), y=unmapped(0))
    failed = TriggerFailed("no")
    parent = Mapped(map_states=[Success(result=[1, 2]), failed, Success(result=[3])])
    children = expand_map(m, edges_of(flow, m), {a: parent}, {"y": 0})
    assert [inputs["x"] for inputs, _ in children] == [1, 2, None, 3]
    assert [ups[a].name for _, ups in children] == ["Success", "Success", "TriggerFailed",
                                                    "Success"]


def test_expand_flatten_of_a_plain_list_of_lists():
    with Flow("flatten plain") as flow:
        a = src()
        m = add.map(flatten(a), y=unmapped(0))
    children = expand_map(m, edges_of(flow, m), {a: Success(result=[[1], [], [2, 3]])}, {"y": 0})
    assert [inputs["x"] for inputs, _ in children] == [1, 2, 3]


def test_expand_refuses_what_it_cannot_map_over():
    with Flow("bad") as flow:
        a = src()
        m = add.map(a, y=unmapped(0))
    with pytest.raises(MapError, match="not iterable"):
        expand_map(m, edges_of(flow, m), {a: Success(result=None)}, {"y": 0})
    with pytest.raises(MapError, match="by character"):
        expand_map(m, edges_of(flow, m), {a: Success(result=b"bytes")}, {"y": 0})


def test_expand_gives_skipped_children_their_own_state():
    with Flow("skips") as flow:
        a = src()
        m = add.map(a, y=unmapped(0))
    skipped = Skipped()
    children = expand_map(m, edges_of(flow, m), {a: Mapped(map_states=[skipped])}, {"y": 0})
    assert children[0][1][a] is skipped


def test_looped_state_is_what_the_events_carry():
    events = []
    run_task_run(spec_for(countdown, {"n": 1}), events.append)
    looped = events[1].state
    assert isinstance(looped, Looped) and looped.loop_index == 0 and looped.result == 0


def test_a_retry_of_a_resumed_iteration_starts_from_the_value_it_was_given():
    handed = ["page 0"]

    def fetch():
        ctx = iterflow.context
        pages = ctx.loop_result
        pages.append(f"page {ctx.loop_index}")
        if ctx.task_run_count == 1:
            raise ConnectionError("transient")
        return pages

    state = run_task_run(spec_for(fetch, start=1, loop_result=handed, max_retries=1))
    assert state.result == ["page 0", "page 1"]


def test_a_retry_uses_the_handed_over_value_itself_when_it_cannot_be_kept():
    class Unpicklable(list):
        def __reduce__(self):
            raise TypeError("no pickling")

    handed = Unpicklable(["a"])
    seen = []

    def fetch():
        ctx = iterflow.context
        seen.append(ctx.loop_result)
        if ctx.task_run_count == 1:
            raise ConnectionError("transient")
        return len(seen)

    assert run_task_run(spec_for(fetch, start=1, loop_result=handed, max_retries=1)).result == 2
    assert seen[0] is handed and seen[1] is handed
