"""Triggers as pure functions of upstream states, and what a failed trigger names."""

from __future__ import annotations

import pytest

from iterflow import triggers
from iterflow.core.triggers import offending_states
from iterflow.states import Cached, Failed, Mapped, Skipped, Success, TimedOut, TriggerFailed

S, F, K = Success(), Failed(), Skipped()


def ups(*states):
    return {f"t{i}": s for i, s in enumerate(states)}


@pytest.mark.parametrize(
    "trigger, upstream, expected",
    [
        (triggers.all_successful, ups(), True),
        (triggers.all_successful, ups(S, Cached(), K), True),
        (triggers.all_successful, ups(S, F), False),
        (triggers.all_failed, ups(F, TriggerFailed(), TimedOut()), True),
        (triggers.all_failed, ups(F, S), False),
        (triggers.all_failed, ups(F, K), False),  # a skip counts as a success
        (triggers.any_successful, ups(F, S), True),
        (triggers.any_successful, ups(F, K), True),
        (triggers.any_successful, ups(F, F), False),
        (triggers.any_successful, ups(), True),
        (triggers.any_failed, ups(S, TimedOut()), True),
        (triggers.any_failed, ups(S, K), False),
        (triggers.any_failed, ups(), True),
        (triggers.all_finished, ups(S, F, K), True),
        (triggers.all_finished, ups(), True),
        (triggers.all_successful, ups(Mapped(map_states=[S, F])), False),
        (triggers.any_failed, ups(Mapped(map_states=[S, F])), True),
        (triggers.all_successful, ups(Mapped(map_states=[])), True),
    ],
)
def test_trigger_truth_table(trigger, upstream, expected):
    assert trigger(upstream) is expected


def test_always_run_is_all_finished():
    assert triggers.always_run is triggers.all_finished


def test_not_all_skipped():
    assert triggers.not_all_skipped(ups(K, S))
    assert not triggers.not_all_skipped(ups(K, K))


def test_offending_states_name_what_failed_the_trigger():
    upstream = {"good": S, "bad": F, "skipped": K}
    assert offending_states(triggers.all_successful, upstream) == {"bad": F}
    assert offending_states(triggers.all_failed, upstream) == {"good": S, "skipped": K}
    assert offending_states(triggers.not_all_skipped, {"skipped": K}) == {"skipped": K}
    # A trigger it does not know: every upstream state is shown.
    assert offending_states(lambda u: False, upstream) == upstream


# -- what a TriggerFailed says about a mapped upstream ------------------------------------
def test_a_reduce_after_a_failed_mapped_child_names_the_child_and_the_count():
    from iterflow import Flow, task

    @task
    def child(x):
        if x in (3, 5):
            raise ValueError(f"bad {x}")
        return x

    @task
    def total(xs):
        return sum(xs)

    with Flow("map reduce") as flow:
        t = total(child.map(list(range(8))))
    state = flow.run(store=None)
    message = state.result[t].message
    assert isinstance(state.result[t], TriggerFailed)
    assert "2 of 8 mapped children failed" in message, message
    assert "map indexes 3: Failed, 5: Failed" in message, message
    assert "(child: Mapped)" not in message


def test_describe_upstream_counts_children_beyond_those_it_names():
    from iterflow.core.triggers import describe_upstream

    class Up:
        slug = "child"

    children = [Failed() if i % 2 else Success() for i in range(20)]
    text = describe_upstream({Up(): Mapped(map_states=children)})
    assert text.startswith("child: 10 of 20 mapped children failed (map indexes 1: Failed, 3:")
    assert text.endswith(", and 5 more)")
    assert describe_upstream({Up(): TimedOut()}) == "child: TimedOut"
