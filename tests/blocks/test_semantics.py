"""What a loop block does when it runs: one rule per test, on every executor."""

from __future__ import annotations

import threading
import time

import iterflow
from iterflow import LOOP, Flow, case, loop, task, unmapped
from iterflow.events import TaskRunEvent
from tests.blocks.tasks import add, at_least, ident


@task
def last_index(i, n):
    return i >= n - 1


@task
def append(xs, x):
    return [*xs, x]


@task
def total_of(xs):
    return sum(xs)


def test_the_carried_value_starts_at_initial_and_the_final_value_leaves(run, executor):
    with Flow("sum") as flow:
        with loop(initial=100) as it:
            total = add(it.result, it.index)                 # 100 + 0 + 1 + 2 + 3
            it.next(result=total, until=last_index(it.index, 4))
        after = ident(it.final)
    state = run(flow, executor=executor)
    assert state.is_successful()
    final = state.result[it.final]
    assert (final.result, final.loop_count) == (106, 4)
    assert state.result[after].result == 106


def test_body_tasks_run_once_per_iteration_in_dependency_order(run, executor, sink):
    # Side effects do not come back from Dask workers: the events tell what ran when.
    @task
    def step(x=0, y=0):
        return x + y + 1

    with Flow("diamond") as flow, loop(initial=0) as it:
        f = step(it.result)
        a = step(f)
        b = step(f)
        j = step(a, b)
        it.next(result=j, until=last_index(it.index, 3))
    state = run(flow, executor=executor)
    # j = (f+1) + (f+1) + 1 with f = carried + 1: 0 -> 5 -> 15 -> 35
    assert state.result[it.final].result == 35
    runs = {}
    for e in sink.events:
        if isinstance(e, TaskRunEvent) and e.block_index is not None:
            runs.setdefault((e.block_index, e.task_slug), []).append(e.state)
    placeholders = {it.result.slug, it.index.slug}  # supplied, never run
    assert {slug for _, slug in runs} == {t.slug for t in it.final.members} - placeholders
    for (k, _slug), states in runs.items():
        assert [s.name for s in states] == ["Running", "Success"], (k, _slug)

    def started(k, t):
        return runs[(k, t.slug)][0].timestamp

    def ended(k, t):
        return runs[(k, t.slug)][-1].timestamp

    for k in range(3):
        assert ended(k, f) <= started(k, a) and ended(k, f) <= started(k, b)
        assert max(ended(k, a), ended(k, b)) <= started(k, j)
        if k:
            assert ended(k - 1, j) <= started(k, f)  # iterations follow one another


def test_it_result_can_be_indexed_and_initial_can_be_a_dict(run, executor):
    @task
    def train(model, data):
        return (model or 0) + sum(data)

    @task
    def evaluate(model):
        return 100 - model

    @task
    def pack(model, loss):
        return {"model": model, "best": loss}

    @task
    def converged(loss, best):
        return best is not None and loss < 60

    @task
    def load():
        return [1, 2, 3]

    with Flow("train until converged") as flow:
        data = load()
        with loop(initial={"model": None, "best": None}, max_loops=200) as it:
            model = train(it.result["model"], data)
            loss = evaluate(model)
            it.next(result=pack(model, loss), until=converged(loss, it.result["best"]))
        report = ident(it.final)
    state = run(flow, executor=executor)
    assert state.result[report].result == {"model": 42, "best": 58}
    assert state.result[it.final].loop_count == 7


def test_initial_may_be_a_task_outside_the_block(run, executor):
    @task
    def seed():
        return 40

    with Flow("seeded") as flow, loop(initial=seed()) as it:
        total = add(it.result, 1)
        it.next(result=total, until=at_least(total, 42))
    assert run(flow, executor=executor).result[it.final].result == 42


def test_without_a_result_the_carried_value_stays(run, executor):
    with Flow("poll") as flow, loop(initial="same") as it:
        seen = ident(it.result)
        it.next(until=last_index(it.index, 3))
    state = run(flow, executor=executor)
    assert state.result[it.final].result == "same"
    assert state.result[seen].result == "same"


def test_outside_inputs_run_once_and_are_shared_by_every_iteration(run, executor, sink):
    @task
    def load():
        return 5

    @task
    def summary(final):
        return f"final {final}"

    with Flow("shared") as flow:
        data = load()
        with loop(initial=0) as it:
            total = add(it.result, data)
            it.next(result=total, until=at_least(total, 20))
        report = summary(it.final)
    state = run(flow, executor=executor)
    assert sink.states(data.slug) == ["Running", "Success"]
    assert sink.states(report.slug) == ["Running", "Success"]
    assert state.result[report].result == "final 20"
    assert len(sink.finals(total.slug)) == 4


def test_context_inside_a_block(run, executor):
    @task
    def look(seen):
        ctx = iterflow.context
        return [*seen, (ctx.block_index, ctx.block_indices, ctx.loop_index, ctx.task_run_id)]

    @task
    def three(seen):
        return len(seen) == 3

    with Flow("ctx") as flow, loop(initial=[], name="epochs") as it:
        seen = look(it.result)
        it.next(result=seen, until=three(seen))
    state = run(flow, executor=executor)
    run_id = state.run_id
    assert state.result[it.final].result == [
        (k, (k,), 0, f"{run_id}/epochs/{k}/look") for k in range(3)
    ]


def test_a_task_looping_inside_a_block_still_loops_itself(run, executor):
    @task
    def accumulate(x, iterations):  # DESIGN §2, unchanged
        result = x + iterflow.context.get("loop_result", 0)
        if iterflow.context.loop_index < iterations:
            raise LOOP(result=result)
        return result

    with Flow("nested loop") as flow, loop(initial=0) as it:
        inner = accumulate(x=1, iterations=it.index)   # runs it.index + 1 times
        total = add(it.result, inner)
        it.next(result=total, until=last_index(it.index, 4))
    state = run(flow, executor=executor)
    assert state.result[it.final].result == 1 + 2 + 3 + 4
    assert state.result[inner].loop_count == 4   # in the last iteration


def test_blocks_nest(run, executor, sink):
    with Flow("grid") as flow, loop(initial=[], name="rows") as rows:
        with loop(initial=0, name="cols") as cols:
            cell = add(cols.result, rows.index)          # sum of the row index, 3 times
            cols.next(result=cell, until=last_index(cols.index, 3))
        collected = append(rows.result, cols.final)
        rows.next(result=collected, until=last_index(rows.index, 4))
    state = run(flow, executor=executor)
    assert state.result[rows.final].result == [0, 3, 6, 9]
    assert state.result[rows.final].loop_count == 4
    inner_ids = {e.task_run_id for e in sink.task_events("cols")}
    assert inner_ids == {f"{state.run_id}/rows/{k}/cols" for k in range(4)}
    cells = {(e.task_run_id, e.block_index) for e in sink.finals(cell.slug)}
    assert cells == {
        (f"{state.run_id}/rows/{r}/cols/{c}/{cell.slug}", c) for r in range(4) for c in range(3)
    }


def test_a_block_may_contain_a_mapped_task(run, executor):
    @task
    def split(n):
        return list(range(n))

    @task
    def square(x, offset):
        return x * x + offset

    with Flow("fan out") as flow, loop(initial=0) as it:
        parts = split(4)
        squares = square.map(parts, offset=unmapped(it.index))
        total = add(it.result, total_of(squares))
        it.next(result=total, until=last_index(it.index, 3))
    state = run(flow, executor=executor)
    # iteration k adds 0 + 1 + 4 + 9 + 4k
    assert state.result[it.final].result == 14 + 18 + 22
    assert state.result[squares].result == [2, 3, 6, 11]


def test_mapping_over_the_carried_value(run, executor):
    @task
    def double(x):
        return 2 * x

    @task
    def biggest(xs):
        return max(xs) >= 16

    with Flow("map carried") as flow, loop(initial=[1, 2]) as it:
        doubled = double.map(it.result)
        it.next(result=doubled, until=biggest(doubled))
    state = run(flow, executor=executor)
    assert state.result[it.final].result == [8, 16]
    assert state.result[doubled].is_mapped()


def test_case_inside_a_block_branches_per_iteration(run, executor):
    @task
    def parity(i):
        return i % 2

    @task
    def even(total):
        return total + 10

    @task
    def odd(total):
        return total + 1

    with Flow("branches") as flow, loop(initial=0) as it:
        p = parity(it.index)
        with case(p, 0):
            e = even(it.result)
        with case(p, 1):
            o = odd(it.result)
        merged = iterflow.merge(e, o)
        it.next(result=merged, until=last_index(it.index, 5))
    state = run(flow, executor=executor)
    assert state.result[it.final].result == 10 + 1 + 10 + 1 + 10


def test_a_block_inside_a_case_not_taken_is_skipped_with_its_body(run, executor):
    @task
    def no():
        return False

    with Flow("skipped block") as flow:
        with case(no(), True), loop(initial=0) as it:
            a = add(it.result, 1)
            it.next(result=a, until=at_least(a, 3))
        after = ident(it.final)
    state = run(flow, executor=executor)
    assert state.is_successful()
    for t in (it.final, a, after):
        assert state.result[t].is_skipped(), t


def test_the_block_reports_each_iteration_like_a_looping_task(run, executor, sink):
    with Flow("observed") as flow, loop(initial=0, name="count") as it:
        a = add(it.result, 1)
        it.next(result=a, until=at_least(a, 3))
    state = run(flow, executor=executor)
    assert sink.states("count") == [
        "Running", "Looped(0)", "Running", "Looped(1)", "Running", "Success",
    ]
    looped = [e.state.result for e in sink.task_events("count") if e.state.is_looped()]
    assert looped == [1, 2]
    block_events = sink.task_events("count")
    assert {e.task_run_id for e in block_events} == {f"{state.run_id}/count"}
    assert all(e.block_index is None for e in block_events)
    body = [e for e in sink.events if isinstance(e, TaskRunEvent) and e.task_slug == a.slug]
    assert [(e.block_index, e.state.name) for e in body if e.state.is_finished()] == [
        (0, "Success"), (1, "Success"), (2, "Success"),
    ]
    assert len({e.task_run_id for e in body}) == 3


def test_the_flow_result_shows_body_tasks_as_in_the_last_iteration(run, executor):
    with Flow("last") as flow, loop(initial=0) as it:
        a = add(it.result, 2)
        it.next(result=a, until=at_least(a, 6))
    state = run(flow, executor=executor)
    assert state.result[a].result == 6
    assert state.result[it.result].result == 4
    assert state.result[it.final].result == 6


def test_two_independent_blocks_run_side_by_side(run, executor):
    @task
    def slow(x):
        time.sleep(0.01)
        return x + 1

    with Flow("two blocks") as flow:
        with loop(initial=0, name="a") as one:
            x = slow(one.result)
            one.next(result=x, until=at_least(x, 5))
        with loop(initial=100, name="b") as two:
            y = slow(two.result)
            two.next(result=y, until=at_least(y, 103))
        both = add(one.final, two.final)
    state = run(flow, executor=executor)
    assert state.result[both].result == 5 + 103


def test_iterations_on_a_parallel_executor_run_their_independent_tasks_together(sink):
    from iterflow.executors import ThreadExecutor
    from iterflow.runtime import run_flow

    barrier = threading.Barrier(2, timeout=5)

    @task
    def meet(x):
        barrier.wait()  # both tasks of an iteration must be running at once
        return x + 1

    with Flow("parallel body") as flow, loop(initial=0) as it:
        a = meet(it.result)
        b = meet(it.result)
        total = add(a, b)
        it.next(result=total, until=last_index(it.index, 3))
    state = run_flow(flow, store=None, executor=ThreadExecutor(4), sinks=[sink])
    assert state.result[it.final].result == 14   # 0 -> 2 -> 6 -> 14


def test_a_body_task_maps_element_wise_over_a_mapped_outside_task(run, executor):
    @task
    def tens(x):
        return 10 * x

    @task
    def shift(x, by):
        return x + by

    with Flow("mapped feeder") as flow:
        base = tens.map([1, 2, 3])
        with loop(initial=0) as it:
            shifted = shift.map(base, by=unmapped(it.index))
            total = add(it.result, total_of(shifted))
            it.next(result=total, until=last_index(it.index, 2))
    state = run(flow, executor=executor)
    assert state.result[shifted].result == [11, 21, 31]
    assert state.result[it.final].result == 60 + 63
