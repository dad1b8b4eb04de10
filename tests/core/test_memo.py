"""What is derived from a flow's graph is kept until a graph changes, and only until then.

A flow's validation, block layout and shape are computed once per graph
(``iterflow.core.memo``): a child flow runs once per subflow call. A change
to any flow after a run must be seen by the next run.
"""

from __future__ import annotations

import pytest

from iterflow import Flow, Parameter, loop, task
from iterflow.core.memo import derived, graph_changed
from iterflow.errors import ArgumentError, FlowDefinitionError


@task
def inc(x):
    return x + 1


@task
def at_least(x, n):
    return x >= n


def test_a_value_is_kept_until_some_graph_changes():
    with Flow("f") as f:
        inc(1)
    calls = []
    make = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert derived(f, "k", make) == derived(f, "k", make) == 1
    with Flow("other"):
        inc(2)  # any flow's change: a flow's validity depends on the flows it calls
    assert derived(f, "k", make) == 2
    graph_changed()
    assert derived(f, "k", make) == 3


def test_an_error_is_not_kept():
    with Flow("f") as f:
        inc(1)

    def fails():
        raise ValueError("no")

    with pytest.raises(ValueError):
        derived(f, "k", fails)
    assert derived(f, "k", lambda: 5) == 5


def test_a_flow_made_invalid_after_a_run_is_refused_on_the_next_run():
    with Flow("f") as f:
        t = inc(Parameter("x"))
    assert f.run(parameters={"x": 1}).result[t].result == 2
    f.set_dependencies(t, keyword_tasks={"y": Parameter("y")})  # inc takes no y
    with pytest.raises(ArgumentError, match="'inc'"):
        f.run(parameters={"x": 1, "y": 2})


def test_a_child_flow_changed_between_calls_runs_as_changed():
    with Flow("child") as child:
        one = inc(Parameter("x"))
    with Flow("parent") as parent:
        call = child(x=1)
    assert parent.run().result[call].result == 2
    with child:
        two = inc(one)
    child.set_reference_tasks([two])
    assert parent.run().result[call].result == 3


def test_a_loop_block_added_after_a_run_is_laid_out_for_the_next():
    with Flow("f") as f:
        start = inc(0)
    assert f.run().result[start].result == 1
    with f:
        with loop(initial=start, max_loops=10) as it:
            body = inc(it.result)
            it.next(result=body, until=at_least(body, 4))
        after = inc(it.final)
    assert f.run().result[after].result == 5
    with f, pytest.raises(FlowDefinitionError), loop(initial=0) as it2:
        inc(it2.result)  # never calls it.next: refused as the block ends


def test_a_flow_that_goes_away_takes_its_values_with_it():
    import gc

    from iterflow.core import memo

    with Flow("gone") as f:
        inc(1)
    derived(f, "k", lambda: 1)
    ident = id(f)
    assert ident in memo._memo
    del f
    gc.collect()
    assert ident not in memo._memo  # and a new object given that id starts afresh


def test_an_object_that_cannot_be_referenced_weakly_is_refused():
    with pytest.raises(TypeError):
        derived(object(), "k", lambda: 1)
