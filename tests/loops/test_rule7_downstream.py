"""DESIGN §7.7: downstream tasks start only after the loop ends and see only its final value."""

from __future__ import annotations

import threading
import time

import iterflow
from iterflow import Flow, task
from iterflow.executors import ThreadExecutor
from iterflow.signals import LOOP


def test_downstream_starts_after_the_loop_and_sees_only_the_final_value(run, executor):
    log = []
    lock = threading.Lock()

    @task
    def producer():
        with lock:
            log.append(("producer", iterflow.context.loop_index))
        time.sleep(0.01)
        if iterflow.context.loop_index < 4:
            raise LOOP(result=iterflow.context.loop_index)
        return "final"

    @task
    def consumer(value):
        with lock:
            log.append(("consumer", value))
        return value

    with Flow("rule 7") as flow:
        c = consumer(producer())
    state = run(flow, executor=executor)
    assert state.result[c].result == "final"
    assert log == [("producer", i) for i in range(5)] + [("consumer", "final")]


def test_ordering_edges_also_wait_for_the_whole_loop(run):
    log = []

    @task
    def looper():
        log.append("loop")
        if iterflow.context.loop_index < 2:
            raise LOOP()

    @task
    def after():
        log.append("after")

    with Flow("ordering") as flow:
        after(upstream_tasks=[looper()])
    run(flow, executor=ThreadExecutor(2))
    assert log == ["loop", "loop", "loop", "after"]


def test_mapping_over_a_looped_tasks_final_result_is_normal(run):
    @task
    def grow():
        items = iterflow.context.get("loop_result", [])
        if len(items) < 3:
            raise LOOP(result=[*items, len(items)])
        return items

    @task
    def square(x):
        return x * x

    with Flow("map final") as flow:
        g = grow()
        s = square.map(g)
    state = run(flow)
    assert state.result[g].loop_count == 4
    assert state.result[s].result == [0, 1, 4]


def test_a_looping_task_downstream_of_a_loop_gets_the_final_value_on_each_iteration(run):
    seen = []

    @task
    def upstream_loop():
        if iterflow.context.loop_index < 3:
            raise LOOP()
        return "up"

    @task
    def downstream_loop(x):
        seen.append(x)
        if iterflow.context.loop_index < 2:
            raise LOOP()

    with Flow("loop after loop") as flow:
        downstream_loop(upstream_loop())
    run(flow)
    assert seen == ["up", "up", "up"]
