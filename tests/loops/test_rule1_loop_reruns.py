"""DESIGN §7.1: LOOP(result=r) at iteration i records Looped(i, r) and re-runs at once
with loop_index i+1 and loop_result r; upstream inputs are the same on every iteration."""

from __future__ import annotations

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP
from iterflow.states import Looped


def test_loop_records_looped_and_reruns_with_the_next_index_and_result(run, sink, executor):
    seen = []

    @task
    def step():
        i = iterflow.context.loop_index
        seen.append((i, iterflow.context.get("loop_result", "absent")))
        if i < 3:
            raise LOOP(result=f"after {i}")
        return "end"

    with Flow("rule 1") as flow:
        s = step()
    state = run(flow, executor=executor)
    assert seen == [(0, "absent"), (1, "after 0"), (2, "after 1"), (3, "after 2")]
    looped = [st for st in sink.task_states("step") if st.is_looped()]
    assert all(isinstance(st, Looped) for st in looped)
    assert [(st.loop_index, st.result) for st in looped] == [
        (0, "after 0"), (1, "after 1"), (2, "after 2")
    ]
    assert state.result[s].result == "end"


def test_loop_index_starts_at_zero_and_loop_result_is_absent_on_the_first_iteration(run):
    seen = []

    @task
    def first():
        seen.append(("loop_result" in iterflow.context, iterflow.context.loop_index,
                     iterflow.context.task_loop_count))

    with Flow("first") as flow:
        first()
    run(flow)
    assert seen == [(False, 0, 1)]


def test_upstream_inputs_are_the_same_object_on_every_iteration(run, executor):
    ids = []

    @task
    def make():
        return {"payload": [1, 2, 3]}

    @task
    def consume(data):
        ids.append(id(data))
        assert data == {"payload": [1, 2, 3]}
        if iterflow.context.loop_index < 4:
            raise LOOP(result=None)
        return len(ids)

    with Flow("inputs") as flow:
        c = consume(make())
    state = run(flow, executor=executor)
    assert state.result[c].result == 5
    assert len(set(ids)) == 1


def test_constants_are_the_same_on_every_iteration(run):
    seen = []

    @task
    def counting(start, step):
        seen.append((start, step))
        if iterflow.context.loop_index < 2:
            raise LOOP(result=0)

    with Flow("constants") as flow:
        counting(10, step=2)
    run(flow)
    assert seen == [(10, 2)] * 3


def test_iterations_run_at_once_one_after_another_in_the_same_place(run):
    order = []

    @task
    def looper(name):
        order.append((name, iterflow.context.loop_index))
        if iterflow.context.loop_index < 2:
            raise LOOP()

    with Flow("in place") as flow:
        looper("a")
        looper("b")
    run(flow)
    # On the local executor a loop is not interleaved with other tasks' work.
    assert order == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]


def test_loop_results_may_be_any_object(run):
    marker = object()

    @task
    def carry():
        if iterflow.context.loop_index == 0:
            raise LOOP(result=marker)
        return iterflow.context.loop_result

    with Flow("objects") as flow:
        c = carry()
    assert run(flow).result[c].result is marker


def test_a_long_loop_does_not_recurse(run, sink):
    @task
    def long_loop():
        if iterflow.context.loop_index < 5000:
            raise LOOP(result=iterflow.context.loop_index)
        return iterflow.context.loop_result

    with Flow("long") as flow:
        ll = long_loop()
    state = run(flow)
    assert state.result[ll].result == 4999
    assert state.result[ll].loop_count == 5001
