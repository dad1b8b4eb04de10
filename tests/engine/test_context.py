"""iterflow.context: what a running task can read, correct per thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import iterflow
from iterflow import Flow, Parameter, task
from iterflow.executors import ThreadExecutor
from iterflow.runtime import run_flow
from iterflow.signals import LOOP


def snapshot():
    ctx = iterflow.context
    return {key: ctx[key] for key in ctx if key != "logger"} | {"has_logger": "logger" in ctx}


def test_context_keys_on_every_iteration(run):
    seen = []

    @task(max_retries=1, max_loops=20)
    def looper(n):
        seen.append(snapshot())
        if iterflow.context.loop_index == 1 and iterflow.context.task_run_count == 1:
            raise OSError("once")
        if iterflow.context.loop_index < n:
            raise LOOP(result=f"r{iterflow.context.loop_index}")
        return "done"

    with Flow("context keys") as flow:
        Parameter("n", default=2)
        looper(2)
    state = run(flow, parameters={"n": 2})
    first, retry_first, retried, last = seen
    run_id = state.run_id
    for ctx in seen:
        assert ctx["flow_name"] == "context keys"
        assert ctx["flow_run_id"] == run_id
        assert ctx["task_name"] == "looper"
        assert ctx["task_run_id"] == f"{run_id}/looper"
        assert ctx["map_index"] is None
        assert ctx["parameters"] == {"n": 2}
        assert ctx["has_logger"]
        assert ctx["task_loop_count"] == ctx["loop_index"] + 1
    assert first["loop_index"] == 0 and first["task_run_count"] == 1
    assert "loop_result" not in first and "task_loop_result" not in first
    assert (retry_first["loop_index"], retry_first["task_run_count"]) == (1, 1)
    assert (retried["loop_index"], retried["task_run_count"]) == (1, 2)
    assert retry_first["loop_result"] == retried["loop_result"] == "r0"
    assert retried["task_loop_result"] == "r0"
    assert (last["loop_index"], last["task_run_count"], last["loop_result"]) == (2, 1, "r1")


def test_every_key_reads_the_same_as_an_attribute_inside_tasks_and_blocks():
    mismatched = []
    seen_keys = set()

    def check():
        ctx = iterflow.context
        for key in ctx:
            seen_keys.add(key)
            if getattr(ctx, key) is not ctx[key]:
                mismatched.append(key)
        if "loop_result" not in ctx:
            assert not hasattr(ctx, "loop_result")

    @task
    def body(index):
        check()
        return index >= 1

    @task
    def looper():
        check()
        if iterflow.context.loop_index < 1:
            raise LOOP(result=iterflow.context.loop_index)
        return 1

    with Flow("attributes") as flow:
        looper()
        with iterflow.loop(initial=0) as it:
            it.next(result=it.index, until=body(it.index))
    assert flow.run(store=None).is_successful()
    assert mismatched == []
    # Every documented key was seen (the properties cover them by name).
    assert {"loop_index", "loop_result", "block_index", "block_indices", "block_run_count",
            "task_slug", "task_run_name", "task_loop_count", "task_loop_result"} <= seen_keys
    # Each key its own value: a property reading another key would show here.
    values = {key: object() for key in seen_keys}
    with iterflow.context(**values):
        assert [key for key in values if getattr(iterflow.context, key) is not values[key]] == []


def test_context_outside_a_run_is_empty_and_says_how_to_read_optional_keys():
    assert "loop_index" not in iterflow.context
    assert iterflow.context.get("loop_index", "none") == "none"
    with pytest.raises(AttributeError, match=r"context.get\('loop_index', default\)"):
        _ = iterflow.context.loop_index
    with pytest.raises(KeyError):
        iterflow.context["loop_index"]


def test_context_is_read_only():
    with pytest.raises(AttributeError, match="read-only"):
        iterflow.context.loop_index = 3


def test_with_context_adds_keys_for_the_block():
    with iterflow.context(tenant="acme", n=1):
        assert iterflow.context.tenant == "acme"
        assert iterflow.context.to_dict()["n"] == 1
        with iterflow.context(n=2):
            assert iterflow.context.n == 2 and iterflow.context.tenant == "acme"
        assert iterflow.context.n == 1
        assert len(iterflow.context) >= 2
        assert "tenant" in repr(iterflow.context)
    assert "tenant" not in iterflow.context


@task
def read_user_keys():
    return iterflow.context.get("tenant"), iterflow.context.get("region")


def test_user_keys_reach_tasks_from_run_and_from_with_context(run):
    with Flow("user keys") as flow:
        out = read_user_keys()
    assert run(flow, context={"tenant": "acme"}).result[out].result == ("acme", None)
    with iterflow.context(region="eu", tenant="outer"):
        state = run(flow, context={"tenant": "inner"})
    assert state.result[out].result == ("inner", "eu")


def test_user_keys_reach_tasks_on_threads(run):
    with Flow("user keys threads") as flow:
        outs = [read_user_keys() for _ in range(4)]
    with iterflow.context(region="eu"):
        state = run(flow, context={"tenant": "t"}, executor=ThreadExecutor(4))
    assert {state.result[o].result for o in outs} == {("t", "eu")}


def test_engine_keys_cannot_be_overridden_by_user_context(run):
    seen = []

    @task
    def look():
        seen.append((iterflow.context.loop_index, iterflow.context.flow_name))

    with Flow("engine keys") as flow:
        look()
    run(flow, context={"loop_index": 99, "flow_name": "fake"})
    assert seen == [(0, "engine keys")]


def test_a_flow_run_inside_a_task_does_not_inherit_the_outer_tasks_loop_keys(run):
    inner_seen = []

    @task
    def inner_task():
        inner_seen.append(snapshot())

    with Flow("inner") as inner:
        inner_task()

    @task
    def outer_task():
        if iterflow.context.loop_index < 1:
            raise LOOP(result="outer result")
        run_flow(inner, store=None)

    with Flow("outer") as outer:
        outer_task()
    assert run(outer).is_successful()
    (ctx,) = inner_seen
    assert ctx["loop_index"] == 0 and ctx["task_run_count"] == 1
    assert "loop_result" not in ctx and "task_loop_result" not in ctx
    assert ctx["flow_name"] == "inner" and ctx["task_name"] == "inner_task"


def test_context_is_correct_per_thread_for_concurrent_loops(run):
    """Two looping tasks, in step at a barrier, each read their own loop_index and names."""
    barrier = threading.Barrier(2, timeout=10)

    def make(name, offset):
        @task(name=name)
        def worker():
            ctx = iterflow.context
            i = ctx.loop_index
            seen = ctx.get("loop_result", [])
            if i >= offset:
                barrier.wait()  # both tasks are mid-iteration at the same time
                time.sleep(0.005)
                seen = [*seen, (ctx.task_name, ctx.loop_index, i, ctx.task_loop_count)]
            if i < offset + 3:
                raise LOOP(result=seen)
            return seen

        return worker

    with Flow("threads") as flow:
        a = make("a", 0)()
        b = make("b", 5)()
    state = run(flow, executor=ThreadExecutor(max_workers=2))
    assert state.result[a].result == [("a", i, i, i + 1) for i in range(4)]
    assert state.result[b].result == [("b", i, i, i + 1) for i in range(5, 9)]


def test_context_map_index_is_per_child_on_threads(run):
    @task
    def child(x):
        time.sleep(0.01)
        return iterflow.context.map_index, x, iterflow.context.task_run_id

    with Flow("children") as flow:
        m = child.map(list(range(6)))
    state = run(flow, executor=ThreadExecutor(max_workers=3))
    assert [r[:2] for r in state.result[m].result] == [(i, i) for i in range(6)]
    assert [r[2] for r in state.result[m].result] == [
        f"{state.run_id}/child/{i}" for i in range(6)
    ]


def test_context_keys_inside_a_timed_iteration(run):
    seen = []

    @task(timeout=5)
    def timed():
        seen.append((iterflow.context.loop_index, iterflow.context.get("loop_result")))
        if iterflow.context.loop_index < 2:
            raise LOOP(result=iterflow.context.loop_index)

    with Flow("timed") as flow:
        timed()
    run(flow)
    assert seen == [(0, None), (1, 0), (2, 1)]


def test_logger_records_carry_the_task_run_and_iteration(run, sink, caplog):
    @task
    def chatty():
        iterflow.context.logger.info("iteration %d", iterflow.context.loop_index)
        if iterflow.context.loop_index < 1:
            raise LOOP()

    with Flow("logs") as flow:
        chatty()
    with caplog.at_level(logging.INFO, logger="iterflow.task"):
        state = run(flow)
    records = [r for r in caplog.records if r.name == "iterflow.task"]
    assert [r.getMessage() for r in records] == ["iteration 0", "iteration 1"]
    assert [r.loop_index for r in records] == [0, 1]
    assert {r.task_name for r in records} == {"chatty"}
    assert {r.flow_run_id for r in records} == {state.run_id}
    assert [(e.message, e.loop_index) for e in sink.logs] == [("iteration 0", 0),
                                                              ("iteration 1", 1)]


def test_log_stdout_sends_prints_to_the_logger(run, sink):
    @task(log_stdout=True)
    def printer():
        print("hello from", iterflow.context.task_name)

    with Flow("stdout") as flow:
        printer()
    run(flow)
    assert [e.message for e in sink.logs] == ["hello from printer"]
