"""Describing loop blocks: what ``with loop(...) as it`` adds to a flow, and what it refuses."""

from __future__ import annotations

import contextlib

import pytest

import iterflow
from iterflow import Flow, loop, task
from iterflow.core.block import CarriedValue, IterationIndex, LoopBlock, block_layout
from iterflow.engine.runner import FlowRunner
from iterflow.errors import CycleError, FlowDefinitionError
from iterflow.executors import LocalExecutor


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


def sibling_leak(name: str) -> Flow:
    """Two blocks side by side; a task in the second uses one inside the first."""
    with Flow(name) as flow:
        with loop(initial=0, name="one") as one:
            a = inc(one.result)
            one.next(result=a, until=done(a))
        with loop(initial=0, name="two") as two:
            b = inc(a)
            two.next(result=b, until=done(b))
    return flow


def test_a_task_inside_one_block_cannot_use_a_task_inside_a_sibling_block():
    with pytest.raises(FlowDefinitionError, match="inside loop block 'one'"):
        sibling_leak("siblings").run(store=None)


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


# -- flow.validate(): the block rules, checked before any run -------------------------
def leak_message(user: str, used: str, block: str, flow: str = "leak") -> str:
    """The message for ``user`` taking ``used`` out of ``block``: names all four, and the fix."""
    return (
        f"task '{user}' in flow '{flow}' uses '{used}', which runs inside loop block "
        f"'{block}'; only the block's final value leaves it: pass the value through "
        f"it.next(result=...) and use it.final after the block"
    )


def refusal(flow: Flow) -> str:
    """The message ``flow.validate()`` refuses the flow with."""
    with pytest.raises(FlowDefinitionError) as refused:
        flow.validate()
    return str(refused.value)


def test_validate_refuses_a_body_task_used_after_the_block():
    with Flow("leak") as flow:
        with loop(initial=0) as it:
            a = inc(it.result)
            it.next(result=a, until=done(a))
        show(a)  # must be it.final
    assert refusal(flow) == leak_message("show", "inc", "loop")


def test_validate_refuses_the_carried_value_used_after_the_block():
    with Flow("leak") as flow:
        with loop(initial=0) as it:
            carried = it.result
            it.next(result=inc(carried), until=done(carried))
        show(carried)
    assert refusal(flow) == leak_message("show", "loop.result", "loop")


def test_validate_refuses_a_mapped_body_task_and_a_map_over_one_after_the_block():
    with Flow("leak") as flow:
        with loop(initial=0) as it:
            many = inc.map([1, 2])
            it.next(until=done(it.result))
        show(many)
    assert refusal(flow) == leak_message("show", "inc", "loop")

    with Flow("leak") as flow:
        with loop(initial=0) as it:
            pair = inc.map([1, 2])
            it.next(until=done(it.result))
        show.map(pair)
    assert refusal(flow) == leak_message("show", "inc", "loop")


def test_validate_refuses_a_task_of_a_nested_block_used_after_it():
    def nested(use_after_outer: bool) -> Flow:
        with Flow("leak") as flow:
            with loop(initial=0, name="outer") as outer:
                with loop(initial=0, name="inner") as inner:
                    x = inc(inner.result)
                    inner.next(result=x, until=done(x))
                if not use_after_outer:
                    show(x)  # inside outer, but after inner: must be inner.final
                outer.next(result=inner.final, until=done(inner.final))
            if use_after_outer:
                show(x)
        return flow

    for after_outer in (False, True):
        assert refusal(nested(after_outer)) == leak_message("show", "inc", "inner")


def test_validate_refuses_a_task_inside_one_block_using_one_inside_a_sibling():
    # Named is the task that uses the value, not the block it sits in.
    assert refusal(sibling_leak("leak")) == leak_message("inc-2", "inc", "one")


def test_validate_refuses_a_block_left_without_until_by_a_caught_error():
    # loop's __exit__ lets the error through, so it never reports the missing until.
    with Flow("f") as flow, contextlib.suppress(ZeroDivisionError), loop(initial=0, name="broken"):
        inc(1)
        raise ZeroDivisionError
    assert refusal(flow) == (
        "loop block 'broken' in flow 'f' never says when to stop: call "
        "it.next(result=..., until=task) inside the block"
    )


def test_run_and_the_runner_refuse_with_the_same_message_as_validate():
    with Flow("leak") as flow:
        with loop(initial=0) as it:
            a = inc(it.result)
            it.next(result=a, until=done(a))
        show(a)
    messages = []
    for attempt in (
        flow.validate,
        lambda: flow.run(store=None),
        # A runner given a flow nobody validated lays it out with the same check.
        lambda: FlowRunner(flow, LocalExecutor()).run(),
    ):
        with pytest.raises(FlowDefinitionError) as refused:
            attempt()
        messages.append(str(refused.value))
    assert messages == [leak_message("show", "inc", "loop")] * 3


def test_validate_accepts_what_blocks_allow():
    with Flow("fine") as flow:
        start = inc(0)                                   # feeds the outer block from outside
        limit = inc(start)
        with loop(initial=start, name="outer") as outer:
            with loop(initial=outer.result, name="inner") as inner:
                x = inc(inner.result)                    # inner's own tasks use each other
                y = add_to(x, limit)                     # and the flow's, across two blocks
                z = add_to(y, outer.index)               # and the outer block's
                inner.next(result=z, until=done(z))
            per_row = inc.map([inner.final, outer.result])
            total = add_to(inner.final, per_row[0])     # inner.final, inside outer
            outer.next(result=total, until=done(total))
        show(outer.final)
        flow.set_dependencies(outer.final, upstream_tasks=[show(limit)])  # ordering edge in
    flow.validate()
    layout = block_layout(flow)
    assert set(layout.blocks) == {inner.final, outer.final}
    assert layout.owner[x] is inner.final and layout.owner[inner.final] is outer.final
    assert layout.enclosing[x] == (inner.final, outer.final)
    assert layout.owner[start] is None and layout.enclosing[start] == ()


def test_a_flow_without_blocks_has_an_empty_layout():
    with Flow("plain") as flow:
        show(inc(0))
    flow.validate()
    assert block_layout(flow).blocks == ()


@task
def add_to(x, y):
    return x + y
