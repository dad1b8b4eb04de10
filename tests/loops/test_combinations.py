"""Loops composed with mapping and branching (issue 3)."""

from __future__ import annotations

import iterflow
from iterflow import Flow, case, ifelse, merge, task, triggers, unmapped
from iterflow.executors import ThreadExecutor
from iterflow.signals import LOOP, SKIP
from iterflow.states import Mapped, Skipped, Success


@task
def paginate(source, pages):
    """A paginated source: one page per iteration until there are no more."""
    ctx = iterflow.context
    collected = [*ctx.get("loop_result", []), f"{source}:{ctx.loop_index}"]
    if ctx.loop_index + 1 < pages:
        raise LOOP(result=collected)
    return collected


@task
def count(items):
    return len(items)


def test_each_source_paginates_independently_then_reduces(run, executor):
    with Flow("pagination") as flow:
        pages = paginate.map(["a", "b", "c"], [3, 1, 2])
        counts = count.map(pages)
        total = task(lambda xs: sum(xs), name="total")(counts)
    state = run(flow, executor=executor)
    assert state.result[pages].result == [["a:0", "a:1", "a:2"], ["b:0"], ["c:0", "c:1"]]
    assert [c.loop_count for c in state.result[pages].map_states] == [3, 1, 2]
    assert state.result[counts].result == [3, 1, 2]
    assert state.result[total].result == 6


def test_a_looping_map_over_a_looping_map(run):
    @task
    def refine(items):
        ctx = iterflow.context
        current = ctx.get("loop_result", items)
        if len(current) > 1:
            raise LOOP(result=current[1:])
        return current[0]

    with Flow("map of loops of maps") as flow:
        pages = paginate.map(["x", "y"], [4, 2])
        last = refine.map(pages)
    state = run(flow)
    assert state.result[last].result == ["x:3", "y:1"]
    assert [c.loop_count for c in state.result[last].map_states] == [4, 2]


def test_a_loop_inside_a_branch_not_taken_never_runs(run):
    calls = []

    @task
    def looping(label):
        calls.append(label)
        if iterflow.context.loop_index < 3:
            raise LOOP()
        return label

    with Flow("branch") as flow:
        cond = task(lambda: False, name="cond")()
        taken, not_taken = looping("taken"), looping("not taken")
        ifelse(cond, not_taken, taken)
        result = merge(not_taken, taken)
    state = run(flow)
    assert isinstance(state.result[not_taken], Skipped)
    assert state.result[not_taken].loop_count == 0
    assert state.result[taken].loop_count == 4
    assert calls == ["taken"] * 4
    assert state.result[result].result == "taken"


def test_a_loops_final_value_chooses_the_branch(run):
    @task
    def converge():
        value = iterflow.context.get("loop_result", 100) // 2
        if value > 3:
            raise LOOP(result=value)
        return "small" if value < 2 else "medium"

    with Flow("loop decides") as flow:
        kind = converge()
        with case(kind, "small"):
            small = task(lambda: "went small", name="small")()
        with case(kind, "medium"):
            medium = task(lambda: "went medium", name="medium")()
        result = merge(small, medium)
    state = run(flow)
    assert state.result[kind].result == "medium"  # 50, 25, 12, 6, 3
    assert state.result[kind].loop_count == 5
    assert state.result[small].is_skipped()
    assert state.result[result].result == "went medium"


def test_mapped_looping_children_inside_a_case(run):
    with Flow("mapped in case") as flow:
        mode = task(lambda: "go", name="mode")()
        with case(mode, "go"):
            pages = paginate.map(["p", "q"], unmapped(2))
        with case(mode, "stop"):
            stopped = paginate.map(["r"], unmapped(5))
    state = run(flow)
    assert state.result[pages].result == [["p:0", "p:1"], ["q:0", "q:1"]]
    assert isinstance(state.result[stopped], Skipped)


def test_children_that_skip_mid_loop_propagate_element_wise(run):
    @task
    def until_empty(source):
        ctx = iterflow.context
        if source == "empty" and ctx.loop_index == 1:
            raise SKIP("no data after all")
        if ctx.loop_index < 2:
            raise LOOP(result=ctx.loop_index)
        return source

    with Flow("child skips") as flow:
        read = until_empty.map(["full", "empty", "full"])
        upper = task(lambda s: s.upper(), name="upper").map(read)
        joined = task(lambda xs: [x for x in xs if x], name="joined",
                      skip_on_upstream_skip=False)(upper)
    state = run(flow)
    assert [c.name for c in state.result[read].map_states] == ["Success", "Skipped", "Success"]
    assert state.result[read].map_states[1].loop_count == 2
    assert [c.name for c in state.result[upper].map_states] == ["Success", "Skipped", "Success"]
    assert state.result[joined].result == ["FULL", "FULL"]


def test_retries_inside_mapped_loops_resume_each_child_where_it_was(run):
    seen = []

    @task(max_retries=1, max_loops=20)
    def flaky_pages(source):
        ctx = iterflow.context
        seen.append((source, ctx.loop_index, ctx.task_run_count, ctx.get("loop_result")))
        if ctx.loop_index == 1 and ctx.task_run_count == 1:
            raise OSError("flaky page")
        if ctx.loop_index < 2:
            raise LOOP(result=f"{source}{ctx.loop_index}")
        return ctx.loop_result

    with Flow("mapped retries") as flow:
        m = flaky_pages.map(["a", "b"])
    state = run(flow, executor=ThreadExecutor(2))
    assert state.result[m].result == ["a1", "b1"]
    for source in "ab":
        assert [s[1:] for s in seen if s[0] == source] == [
            (0, 1, None), (1, 1, f"{source}0"), (1, 2, f"{source}0"), (2, 1, f"{source}1")
        ]


def test_an_always_run_cleanup_after_a_failed_mapped_loop(run):
    @task(max_loops=3)
    def runaway(x):
        if x == "runaway":
            raise LOOP()
        return x

    cleaned = []

    @task(trigger=triggers.always_run)
    def cleanup(results):
        cleaned.append([r if isinstance(r, str) else type(r).__name__ for r in results])

    with Flow("cleanup") as flow:
        m = runaway.map(["fine", "runaway"])
        c = cleanup(m)
    state = run(flow)
    assert isinstance(state.result[m], Mapped) and state.result[m].is_failed()
    assert isinstance(state.result[c], Success)
    assert cleaned == [["fine", "LoopLimitError"]]
    assert state.is_successful()  # the terminal cleanup succeeded
