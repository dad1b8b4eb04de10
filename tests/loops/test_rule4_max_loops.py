"""DESIGN §7.4: max_loops=N allows iterations 0..N-1; LOOP at N-1 fails the task with an
error naming the task, the limit and the last loop index."""

from __future__ import annotations

import iterflow
from iterflow import Flow, task
from iterflow.errors import LoopLimitError
from iterflow.signals import LOOP
from iterflow.states import Failed


@task
def loops_until(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return iterflow.context.loop_index


def test_max_loops_allows_iterations_up_to_n_minus_one(run, executor):
    with Flow("within") as flow:
        t = loops_until.copy(max_loops=5)(4)
    state = run(flow, executor=executor).result[t]
    assert state.is_successful() and state.result == 4 and state.loop_count == 5


def test_loop_at_the_last_allowed_iteration_fails_naming_task_limit_and_index(run, sink):
    with Flow("limit") as flow:
        t = loops_until.copy(max_loops=5, name="bounded")(100)
    state = run(flow).result[t]
    assert isinstance(state, Failed)
    assert state.loop_count == 5
    assert isinstance(state.result, LoopLimitError)
    message = state.message
    assert "'bounded'" in message
    assert "max_loops=5" in message
    assert "loop_index 4" in message
    assert "'limit'" in message  # the flow
    looped = [s.loop_index for s in sink.task_states("bounded") if s.is_looped()]
    assert looped == [0, 1, 2, 3]


def test_max_loops_one_allows_no_loop(run):
    with Flow("one") as flow:
        t = loops_until.copy(max_loops=1)(1)
    state = run(flow).result[t]
    assert state.is_failed() and "loop_index 0" in state.message


def test_the_limit_is_not_retried(run):
    calls = []

    @task(max_loops=2, max_retries=3)
    def forever():
        calls.append(iterflow.context.loop_index)
        raise LOOP()

    with Flow("no retry") as flow:
        f = forever()
    assert run(flow).result[f].is_failed()
    assert calls == [0, 1]


def test_a_mapped_childs_limit_names_its_map_index(run):
    with Flow("mapped limit") as flow:
        m = loops_until.copy(max_loops=3).map([1, 5])
    children = run(flow).result[m].map_states
    assert children[0].is_successful()
    assert children[1].is_failed() and "(map_index 1)" in children[1].message
