"""DESIGN §7.10 (caching rule): cache_for/cache_key apply to the final value only; an
intermediate loop result never satisfies a cache; a cached final value skips the loop."""

from __future__ import annotations

import datetime
import time

import iterflow
from iterflow import Flow, Parameter, task
from iterflow.signals import LOOP
from iterflow.states import Cached, Success


def counted(iterations, **options):
    calls = []

    def fn(x):
        calls.append((x, iterflow.context.loop_index))
        if iterflow.context.loop_index < iterations:
            raise LOOP(result=iterflow.context.loop_index)
        return x * 10

    return task(fn, name="cached_loop", **options), calls


def test_second_run_is_cached_and_skips_the_whole_loop(run, sink, executor):
    t, calls = counted(3, cache_for=60)
    with Flow("cache") as flow:
        made = t(1)
    first = run(flow, executor=executor).result[made]
    assert type(first) is Success and first.loop_count == 4 and len(calls) == 4
    second = run(flow, executor=executor).result[made]
    assert isinstance(second, Cached) and second.is_successful()
    assert second.result == 10 and second.loop_count == 4
    assert len(calls) == 4  # not one more iteration
    second_events = [s.name for s in sink.task_states("cached_loop")][-1:]
    assert second_events == ["Cached"]


def test_different_inputs_miss_the_cache(run):
    t, calls = counted(1, cache_for=datetime.timedelta(minutes=1))
    with Flow("inputs") as flow:
        p = Parameter("x", default=1)
        made = t(p)
    assert run(flow).result[made].result == 10
    assert run(flow, parameters={"x": 2}).result[made].result == 20
    assert isinstance(run(flow, parameters={"x": 2}).result[made], Cached)
    assert [x for x, i in calls if i == 0] == [1, 2]


def test_the_cache_expires(run):
    t, calls = counted(0, cache_for=0.05)
    with Flow("expiry") as flow:
        made = t(1)
    run(flow)
    time.sleep(0.1)
    assert type(run(flow).result[made]) is Success
    assert len(calls) == 2


def test_without_cache_for_nothing_is_cached(run):
    t, calls = counted(1)
    with Flow("no cache") as flow:
        made = t(1)
    run(flow)
    assert type(run(flow).result[made]) is Success and len(calls) == 4


def test_an_interrupted_loop_leaves_nothing_in_the_cache(run):
    """The loop fails at iteration 2: its loop results must not satisfy the next run."""
    outcome = {"fail": True}
    calls = []

    @task(cache_for=60)
    def fragile(x):
        calls.append(iterflow.context.loop_index)
        if iterflow.context.loop_index == 2 and outcome["fail"]:
            raise ValueError("interrupted")
        if iterflow.context.loop_index < 3:
            raise LOOP(result=f"partial {iterflow.context.loop_index}")
        return "complete"

    with Flow("interrupted") as flow:
        made = fragile(1)
    assert run(flow).result[made].is_failed()
    outcome["fail"] = False
    second = run(flow).result[made]
    assert type(second) is Success and second.result == "complete"
    assert calls == [0, 1, 2, 0, 1, 2, 3]  # the second run started from iteration 0
    assert isinstance(run(flow).result[made], Cached)


def test_a_skipped_or_failed_final_state_is_not_cached(run):
    from iterflow.signals import SKIP

    calls = []

    @task(cache_for=60)
    def skips():
        calls.append(1)
        raise SKIP

    with Flow("skip cache") as flow:
        made = skips()
    run(flow)
    assert run(flow).result[made].is_skipped() and len(calls) == 2


def test_tasks_sharing_a_cache_key_share_the_cache(run):
    first, _ = counted(2, cache_for=60, cache_key="shared")
    second, second_calls = counted(2, cache_for=60, cache_key="shared")
    with Flow("writer") as writer:
        first(5)
    with Flow("reader") as reader:
        made = second(5)
    run(writer)
    state = run(reader).result[made]
    assert isinstance(state, Cached) and state.result == 50
    assert second_calls == []


def test_the_default_cache_key_is_per_flow_and_task(run):
    t, calls = counted(0, cache_for=60)
    with Flow("one") as one:
        t(1)
    with Flow("two") as two:
        made = t(1)
    run(one)
    assert type(run(two).result[made]) is Success
    assert len(calls) == 2


def test_mapped_children_cache_on_their_own(run):
    t, calls = counted(1, cache_for=60)
    with Flow("mapped cache") as flow:
        m = t.map([1, 2, 3])
    assert run(flow).result[m].result == [10, 20, 30]
    calls.clear()
    state = run(flow).result[m]
    assert [c.name for c in state.map_states] == ["Cached"] * 3
    assert state.result == [10, 20, 30] and calls == []
    with Flow("mapped cache") as bigger:
        m2 = t.map([1, 2, 3, 4])
    state = run(bigger).result[m2]
    assert [c.name for c in state.map_states] == ["Cached", "Cached", "Cached", "Success"]
    assert calls == [(4, 0), (4, 1)]
