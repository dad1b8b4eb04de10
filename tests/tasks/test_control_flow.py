"""Branching: ifelse, switch, merge and case; branches not taken are Skipped."""

from __future__ import annotations

import pytest

from iterflow import Flow, case, ifelse, merge, switch, task, triggers
from iterflow.signals import SKIP
from iterflow.states import Skipped, Success, TriggerFailed
from iterflow.tasks.control_flow import CompareValue, Merge


@task
def value(v):
    return v


@task
def label(name):
    return name


@task
def shout(text):
    return str(text).upper()


@pytest.mark.parametrize("condition, taken", [(True, "yes"), (False, "no"), (0, "no"),
                                              ([1], "yes"), (None, "no")])
def test_ifelse_runs_one_branch_and_skips_the_other(run, condition, taken):
    with Flow("ifelse") as flow:
        cond = value(condition)
        yes, no = label("yes"), label("no")
        ifelse(cond, yes, no)
        after_yes = shout(yes)
        result = merge(yes, no)
    state = run(flow)
    chosen, other = (yes, no) if taken == "yes" else (no, yes)
    assert isinstance(state.result[chosen], Success)
    assert isinstance(state.result[other], Skipped)
    assert isinstance(state.result[after_yes], Success if taken == "yes" else Skipped)
    assert state.result[result].result == taken
    assert state.is_successful()


def test_switch_runs_the_matching_case_only(run):
    with Flow("switch") as flow:
        kind = value("b")
        branches = {k: label(k) for k in "abc"}
        switch(kind, branches)
        result = merge(*branches.values())
    state = run(flow)
    assert [state.result[branches[k]].name for k in "abc"] == ["Skipped", "Success", "Skipped"]
    assert state.result[result].result == "b"


def test_switch_with_no_match_skips_every_branch_and_merge(run):
    with Flow("no match") as flow:
        kind = value("z")
        a, b = label("a"), label("b")
        switch(kind, {"a": a, "b": b})
        result = merge(a, b)
    state = run(flow)
    assert state.result[a].is_skipped() and state.result[b].is_skipped()
    assert isinstance(state.result[result], Skipped)
    assert state.result[result].message == "every branch was skipped"


def test_merge_picks_the_first_branch_not_skipped_even_if_it_returned_none(run):
    with Flow("merge") as flow:
        cond = value(False)
        first, second, third = value(None), label("second"), label("third")
        ifelse(cond, first, second)  # first skipped
        none_result = value(None)
        result = merge(first, second, third)
        keeps_none = merge(none_result, third)
    state = run(flow)
    assert state.result[result].result == "second"
    assert state.result[keeps_none].result is None  # a None result is not a skip


@task
def skipper():
    raise SKIP("branch not taken")


def test_merge_order_is_argument_order_beyond_nine_branches(run):
    with Flow("many") as flow:
        branches = [label(f"b{i}") for i in range(12)]
        for b in branches[:10]:
            b.set_upstream(skipper())
        result = merge(*branches)
    assert run(flow).result[result].result == "b10"


def test_merge_needs_tasks_and_a_flow():
    with Flow("empty merge"), pytest.raises(ValueError):
        merge()
    with pytest.raises(RuntimeError, match="inside `with Flow"):
        merge(label)


def test_case_blocks(run):
    with Flow("case") as flow:
        kind = value("large")
        with case(kind, "small"):
            small = label("small")
            small_after = shout(small)
        with case(kind, "large"):
            large = label("large")
            large_after = shout(large)
        result = merge(small_after, large_after)
    state = run(flow)
    assert state.result[small].is_skipped() and state.result[small_after].is_skipped()
    assert state.result[large].result == "large"
    assert state.result[result].result == "LARGE"
    assert "case('small')" in state.result[small].message


def test_nested_case_blocks_need_both_conditions(run):
    with Flow("nested") as flow:
        size, colour = value("large"), value("red")
        with case(size, "large"):
            outer = label("large")
            with case(colour, "red"):
                red = label("large red")
            with case(colour, "blue"):
                blue = label("large blue")
        with case(size, "small"), case(colour, "red"):
            small_red = label("small red")
    state = run(flow)
    assert state.result[outer].result == "large"
    assert state.result[red].result == "large red"
    assert state.result[blue].is_skipped()
    assert state.result[small_red].is_skipped()
    gates = [t for t in flow.upstream_tasks(red) if isinstance(t, CompareValue)]
    assert {g.value for g in gates} == {"large", "red"}


def test_tasks_created_outside_a_case_block_are_not_gated(run):
    with Flow("outside") as flow:
        kind = value("x")
        with case(kind, "y"):
            inside = label("inside")
        outside = label("outside")
    state = run(flow)
    assert state.result[inside].is_skipped() and state.result[outside].is_successful()


def test_a_failed_condition_fails_the_branches_not_skips_them(run):
    @task
    def broken():
        raise ValueError("no condition")

    with Flow("failed condition") as flow:
        cond = broken()
        yes, no = label("yes"), label("no")
        ifelse(cond, yes, no)
    state = run(flow)
    assert isinstance(state.result[yes], TriggerFailed)
    assert isinstance(state.result[no], TriggerFailed)
    assert state.is_failed()


def test_skips_propagate_through_branches_unless_told_otherwise(run):
    with Flow("propagate") as flow:
        cond = value(False)
        yes, no = label("yes"), label("no")
        ifelse(cond, yes, no)
        skipped_chain = shout(shout(yes))
        runs_anyway = task(lambda x: f"got {x}", name="anyway", skip_on_upstream_skip=False)(yes)
        cleanup = task(lambda: "clean", name="cleanup", trigger=triggers.always_run)(
            upstream_tasks=[skipped_chain]
        )
    state = run(flow)
    assert state.result[skipped_chain].is_skipped()
    assert state.result[runs_anyway].result == "got None"
    assert state.result[cleanup].is_skipped()  # skip_on_upstream_skip wins over the trigger


def test_control_flow_outside_a_flow_is_an_error():
    with pytest.raises(RuntimeError, match="ifelse"):
        ifelse(label, label, label)
    with pytest.raises(RuntimeError, match="switch"):
        switch(label, {})
    with pytest.raises(RuntimeError, match="case"), case(label, 1):
        pass


def test_compare_value_and_merge_directly():
    assert CompareValue("a").run("a") is True
    with pytest.raises(SKIP):
        CompareValue("a").run("b")
    assert CompareValue(True, truthy=True).run([1]) is True
    with pytest.raises(SKIP):
        CompareValue(True, truthy=True).run([])
    merged = Merge().run(
        branch_2=Success(result=2), branch_1=Skipped(), branch_10=Success(result=10)
    )
    assert merged == 2
