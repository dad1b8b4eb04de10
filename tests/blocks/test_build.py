"""Describing loop blocks: what ``with loop(...) as it`` adds to a flow, and what it refuses."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, loop, task
from iterflow.core.block import CarriedValue, IterationIndex, LoopBlock
from iterflow.errors import CycleError, FlowDefinitionError


@task
def inc(x):
    return x + 1


@task
def done(x):
    return x >= 3


@task
def show(x):
    return x


def test_loop_is_public():
    assert iterflow.loop is loop
    assert "loop" in iterflow.__all__


def test_tasks_inside_become_members_with_an_edge_to_the_block_node():
    with Flow("f") as flow:
        before = inc(0)
        with loop(initial=0) as it:
            a = inc(it.result)
            b = done(a)
            it.next(result=a, until=b)
        after = show(it.final)
    node = it.final
    assert isinstance(node, LoopBlock)
    assert node.members == [it.result, a, b]
    assert isinstance(it.result, CarriedValue)
    assert {before, after, node, a, b, it.result} == flow.tasks
    # outside input -> body -> block node -> tasks after: the flat graph is a DAG in that order
    order = flow.sorted_tasks()
    assert order.index(b) < order.index(node) < order.index(after)
    assert node in flow.upstream_tasks(after)
    assert (node.result_task, node.until_task) == (a, b)


def test_placeholders_are_made_once_and_belong_to_their_own_block():
    with Flow("f"), loop(initial=0, name="outer") as outer:
        with loop(initial=0, name="inner") as inner:
            x = inc(outer.result)   # outer's carried value, first used inside inner
            inner.next(result=x, until=done(x))
        y = show(outer.index)
        outer.next(result=inner.final, until=done(y))
    assert outer.result is outer.result
    assert outer.result in outer.final.members
    assert outer.result not in inner.final.members
    assert isinstance(outer.index, IterationIndex)
    assert inner.final in outer.final.members
    assert x in inner.final.members and x not in outer.final.members
    assert outer.result.slug == "outer.result"
    assert inner.final.parent is outer.final


def test_a_block_needs_next_with_until():
    with Flow("f"), pytest.raises(FlowDefinitionError, match=r"it\.next"), loop(initial=0):
        inc(1)


def test_next_takes_tasks_of_this_block_only():
    with Flow("f") as flow:
        outside = inc(0)
        with loop(initial=0) as it:
            a = inc(it.result)
            with pytest.raises(FlowDefinitionError, match="not created directly inside"):
                it.next(result=outside, until=done(a))
            with pytest.raises(TypeError, match="takes a task"):
                it.next(result=a, until=True)
            it.next(result=a, until=done(a))
            with pytest.raises(FlowDefinitionError, match="already called"):
                it.next(result=a, until=done(a))
    assert flow.tasks


def test_the_carried_value_and_index_exist_only_inside_the_block():
    with Flow("f"):
        with loop(initial=0) as it:
            a = inc(it.result)
            inside = r"it\.final .* inside it, use it\.result"
            with pytest.raises(FlowDefinitionError, match=inside):
                show(it.final)
            it.next(result=a, until=done(a))
        with pytest.raises(FlowDefinitionError, match=r"only available inside"):
            inc(it.index)
        with pytest.raises(TypeError, match="a value, not a task to call"):
            it.final(1)


def test_a_loop_needs_a_flow_and_is_used_once():
    with pytest.raises(RuntimeError, match="inside `with Flow"), loop():
        pass
    with Flow("f"):
        block = loop(initial=0)
        with block as it:
            it.next(until=done(it.result))
        with pytest.raises(FlowDefinitionError, match="already used"), block:
            pass


def test_options_are_checked_like_task_options():
    with pytest.raises(ValueError, match="max_loops"):
        loop(max_loops=0)
    with pytest.raises(ValueError, match="max_retries"):
        loop(max_retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        loop(timeout=0)


def test_a_cycle_through_a_block_is_refused_with_its_path():
    with Flow("f"):
        with loop(initial=0) as it:
            a = inc(it.result)
            it.next(result=a, until=done(a))
        after = show(it.final)
        with pytest.raises(CycleError, match="inc -> loop -> show -> inc"):
            a.set_upstream(after)


def test_using_a_body_task_after_the_block_is_refused_before_anything_runs():
    ran = []

    @task
    def first():
        ran.append(1)
        return 0

    with Flow("leak") as flow:
        start = first()
        with loop(initial=start) as it:
            a = inc(it.result)
            it.next(result=a, until=done(a))
        show(a)  # must be it.final
    leak = r"uses 'inc', which runs inside loop block 'loop'.*it\.final"
    with pytest.raises(FlowDefinitionError, match=leak):
        flow.run(store=None)
    assert ran == []


def test_a_task_inside_one_block_cannot_use_a_task_inside_a_sibling_block():
    with Flow("siblings") as flow:
        with loop(initial=0, name="one") as one:
            a = inc(one.result)
            one.next(result=a, until=done(a))
        with loop(initial=0, name="two") as two:
            b = inc(a)
            two.next(result=b, until=done(b))
    with pytest.raises(FlowDefinitionError, match="inside loop block 'one'"):
        flow.run(store=None)


def test_slugs_are_unique_across_blocks_and_the_flow():
    with Flow("f") as flow:
        inc(0)
        with loop(initial=0) as one:
            a = inc(one.result)
            one.next(result=a, until=done(a))
        with loop(initial=0) as two:
            b = inc(two.result)
            two.next(result=b, until=done(b))
    slugs = [t.slug for t in flow.tasks]
    assert len(slugs) == len(set(slugs))
    assert {one.final.slug, two.final.slug} == {"loop", "loop-2"}
    assert two.result.slug == "loop-2.result"


def test_an_ordering_edge_into_a_block_is_kept(run):
    order = []

    @task
    def first():
        order.append("first")

    @task
    def step(x):
        order.append("step")
        return x + 1

    with Flow("ordered") as flow:
        with loop(initial=0) as it:
            a = step(it.result)
            it.next(result=a, until=done(a))
        flow.set_dependencies(it.final, upstream_tasks=[first()])
    state = run(flow)
    assert state.result[it.final].result == 3
    assert order == ["first", "step", "step", "step"]
