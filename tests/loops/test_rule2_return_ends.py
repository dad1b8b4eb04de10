"""DESIGN §7.2: returning normally ends the loop as Success with loop_count = i + 1."""

from __future__ import annotations

import iterflow
from iterflow import Flow, task
from iterflow.signals import LOOP
from iterflow.states import Success


def test_return_ends_the_loop_with_loop_count(run, sink, executor):
    @task
    def three_iterations():
        if iterflow.context.loop_index < 2:
            raise LOOP(result=iterflow.context.loop_index)
        return "returned"

    with Flow("rule 2") as flow:
        t = three_iterations()
    state = run(flow, executor=executor).result[t]
    assert type(state) is Success
    assert (state.result, state.loop_count) == ("returned", 3)
    assert sink.task_states("three_iterations")[-1] is state


def test_a_task_that_never_loops_has_loop_count_one(run):
    @task
    def once():
        return None

    with Flow("once") as flow:
        o = once()
    state = run(flow).result[o]
    assert state.is_successful() and state.result is None and state.loop_count == 1


def test_the_returned_value_not_the_last_loop_result_is_the_result(run):
    @task
    def differs():
        if iterflow.context.loop_index == 0:
            raise LOOP(result="loop result")
        return "final"

    with Flow("final value") as flow:
        d = differs()
    assert run(flow).result[d].result == "final"
