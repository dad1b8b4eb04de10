"""Mapping end to end (issue 3): iterables, zip, unmapped, flatten, element-wise maps,
empty maps, the Mapped parent, and per-child retries, timeouts and context."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, flatten, task, triggers, unmapped
from iterflow.executors import ThreadExecutor
from iterflow.states import Failed, Mapped, Success, TimedOut, TriggerFailed


@task
def double(x):
    return 2 * x


@task
def add(x, y):
    return x + y


@task
def total(values):
    return sum(values)


@task
def fragile(x):
    if x == 2:
        raise ValueError(f"cannot handle {x}")
    return x


def generator():
    yield from (1, 2, 3)


@pytest.mark.parametrize(
    "iterable",
    [[1, 2, 3], (1, 2, 3), range(1, 4), generator(), iter([1, 2, 3]), {1: "a", 2: "b", 3: "c"}],
    ids=["list", "tuple", "range", "generator", "iterator", "dict keys"],
)
def test_map_over_iterables(run, iterable):
    with Flow("iterables") as flow:
        m = double.map(iterable)
    state = run(flow).result[m]
    assert isinstance(state, Mapped)
    assert state.result == [2, 4, 6]


def test_map_over_an_upstream_tasks_iterable_result(run, executor):
    @task
    def produce():
        return (n for n in range(4))

    with Flow("upstream iterable") as flow:
        m = double.map(produce())
        t = total(m)
    state = run(flow, executor=executor)
    assert state.result[m].result == [0, 2, 4, 6]
    assert state.result[t].result == 12


def test_several_mapped_arguments_are_zipped_shortest_first(run):
    with Flow("zip") as flow:
        m = add.map([1, 2, 3], [10, 20])
    assert run(flow).result[m].result == [11, 22]


def test_unmapped_holds_an_argument_fixed(run):
    @task
    def numbers():
        return [1, 2]

    with Flow("unmapped") as flow:
        n = numbers()
        fixed_list = add.map(unmapped([0]), [[1], [2]])
        fixed_constant = add.map([10, 20], unmapped(100))
        fixed_upstream = task(lambda x, ys: x + len(ys), name="lens").map([1, 2], unmapped(n))
    state = run(flow)
    assert state.result[fixed_list].result == [[0, 1], [0, 2]]
    assert state.result[fixed_constant].result == [110, 120]
    assert state.result[fixed_upstream].result == [3, 4]
    (edge,) = [e for e in flow.upstream_edges(fixed_upstream) if e.upstream_task is n]
    assert not edge.mapped


def test_flatten_maps_over_a_list_of_lists(run):
    @task
    def pages():
        return [[1, 2], [], [3]]

    @task
    def split(x):
        return [x, x + 100]

    with Flow("flatten") as flow:
        literal = double.map(flatten([[1], [2, 3]]))
        from_task = double.map(flatten(pages()))
        from_map = double.map(flatten(split.map([1, 2])))
    state = run(flow)
    assert state.result[literal].result == [2, 4, 6]
    assert state.result[from_task].result == [2, 4, 6]
    assert state.result[from_map].result == [2, 202, 4, 204]


def test_mapping_over_a_mapped_task_is_element_wise(run, executor):
    with Flow("element-wise") as flow:
        first = double.map([1, 2, 3])
        second = add.map(first, [100, 200, 300])
    assert run(flow, executor=executor).result[second].result == [102, 204, 306]


def test_a_failed_child_only_fails_the_matching_downstream_child(run):
    with Flow("matching") as flow:
        first = fragile.map([1, 2, 3])
        second = double.map(first)
        third = double.map(second)
    state = run(flow)
    assert [c.name for c in state.result[first].map_states] == ["Success", "Failed", "Success"]
    assert [c.name for c in state.result[second].map_states] == [
        "Success", "TriggerFailed", "Success"
    ]
    assert [c.name for c in state.result[third].map_states] == [
        "Success", "TriggerFailed", "Success"
    ]
    assert state.result[third].result[::2] == [4, 12]
    assert "fragile: Failed" in state.result[second].map_states[1].message


def test_a_failed_child_fails_the_downstream_reduce_unless_its_trigger_allows(run):
    with Flow("reduce") as flow:
        mapped = fragile.map([1, 2, 3])
        strict = total(mapped)
        tolerant = task(lambda values: [v for v in values if isinstance(v, int)],
                        name="tolerant", trigger=triggers.all_finished)(mapped)
    state = run(flow)
    assert isinstance(state.result[strict], TriggerFailed)
    message = state.result[strict].message
    assert "fragile: 1 of 3 mapped children failed (map index 1: Failed)" in message
    assert state.result[tolerant].result == [1, 3]
    assert state.is_failed() is True  # strict is terminal and failed


def test_an_empty_map_gives_an_empty_mapped_state_and_reduce_gets_an_empty_list(run):
    with Flow("empty") as flow:
        m = double.map([])
        again = double.map(m)
        t = total(m)
    state = run(flow)
    assert isinstance(state.result[m], Mapped)
    assert state.result[m].result == [] and state.result[m].map_states == []
    assert state.result[m].is_successful()
    assert state.result[again].result == []
    assert state.result[t].result == 0
    assert state.is_successful()


def test_mapped_state_result_and_map_states_are_in_order(run):
    @task
    def slow_first(x):
        import time

        time.sleep(0.05 if x == 0 else 0)
        return x

    with Flow("order") as flow:
        m = slow_first.map(list(range(5)))
    state = run(flow, executor=ThreadExecutor(4)).result[m]
    assert state.result == [0, 1, 2, 3, 4]
    assert [c.result for c in state.map_states] == [0, 1, 2, 3, 4]
    assert all(isinstance(c, Success) and c.loop_count == 1 for c in state.map_states)


def test_map_index_is_in_context(run):
    @task
    def where(x):
        return iterflow.context.map_index, iterflow.context.task_name

    @task
    def unmapped_where():
        return iterflow.context.map_index

    with Flow("map index") as flow:
        m = where.map(["a", "b", "c"])
        u = unmapped_where()
    state = run(flow)
    assert state.result[m].result == [(0, "where"), (1, "where"), (2, "where")]
    assert state.result[u].result is None


def test_children_retry_on_their_own(run):
    attempts = []

    @task(max_retries=2)
    def flaky(x):
        attempts.append((x, iterflow.context.task_run_count))
        if x == "b" and iterflow.context.task_run_count < 3:
            raise OSError
        return x

    with Flow("retries") as flow:
        m = flaky.map(["a", "b", "c"])
    assert run(flow).result[m].result == ["a", "b", "c"]
    assert sorted(attempts) == [("a", 1), ("b", 1), ("b", 2), ("b", 3), ("c", 1)]


def test_children_time_out_on_their_own(run, release):
    @task(timeout=0.3)
    def maybe_hang(x):
        if x == 1:
            release.wait(30)
        return x

    with Flow("timeouts") as flow:
        m = maybe_hang.map([0, 1, 2])
    children = run(flow, executor=ThreadExecutor(3)).result[m].map_states
    assert [type(c) for c in children] == [Success, TimedOut, Success]
    assert "(map_index 1)" in children[1].message


def test_mapping_over_a_string_fails_with_advice(run):
    with Flow("string") as flow:
        m = double.map(iterflow.Parameter("word", default="abc"))
    state = run(flow).result[m]
    assert isinstance(state, Failed)
    assert "would map by character" in state.message and "unmapped" in state.message


def test_a_skipped_child_is_skipped_downstream_element_wise(run):
    from iterflow.signals import SKIP

    @task
    def skip_odd(x):
        if x % 2:
            raise SKIP(f"{x} is odd")
        return x

    with Flow("child skip") as flow:
        first = skip_odd.map([0, 1, 2])
        second = double.map(first)
    state = run(flow)
    assert [c.name for c in state.result[second].map_states] == ["Success", "Skipped", "Success"]
    assert state.result[second].is_successful() and state.is_successful()
