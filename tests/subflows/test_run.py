"""Running flows that call flows: values across the boundary, failures, maps, loops, retries."""

from __future__ import annotations

import threading
import time

import pytest

import iterflow
from iterflow import FAIL, Flow, Parameter, loop, task
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runids import subflow_run_id
from iterflow.store import get_run, list_runs, open_store, task_runs
from iterflow.triggers import all_finished, any_failed


@task
def add(x, y):
    return x + y


@task
def mul(x, y):
    return x * y


@task
def at_least(x, n):
    return x >= n


@task
def boom(x):
    raise ValueError(f"boom at {x}")


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(params=["local", "threads"])
def executor(request):
    return LocalExecutor() if request.param == "local" else ThreadExecutor(max_workers=3)


def adder() -> Flow:
    with Flow("adder") as child:
        add(Parameter("x"), Parameter("y", default=100))
    return child


def test_parameters_go_in_and_the_reference_value_comes_out(store_url, executor):
    child = adder()
    with Flow("parent") as parent:
        x = Parameter("x")
        first = child(x=x)
        second = child(x=first, y=1)
        doubled = mul(second, 2)
    state = parent.run(parameters={"x": 5}, store=store_url, executor=executor)
    assert state.is_successful(), state
    assert state.result[first].result == 105
    assert state.result[second].result == 106
    assert state.result[doubled].result == 212


def test_several_reference_tasks_give_a_dict_by_task_name(store_url):
    with Flow("two") as child:
        x = Parameter("x")
        add(x, 1)
        mul(x, 3)
    with Flow("parent") as parent:
        both = child(x=2)
    state = parent.run(store=store_url)
    assert state.result[both].result == {"add": 3, "mul": 6}


def test_set_reference_tasks_picks_the_value_and_decides_the_child_state(store_url):
    with Flow("picky") as child:
        x = Parameter("x")
        kept = add(x, 1)
        boom(x)  # terminal, fails, but is not a reference task
    child.set_reference_tasks([kept])
    alone = child.run(parameters={"x": 1}, store=None)
    assert alone.is_successful(), alone  # the reference task decides
    with Flow("parent") as parent:
        value = child(x=41)
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    assert state.result[value].result == 42


def test_a_failed_reference_task_fails_the_flow_even_when_terminal_tasks_succeed():
    with Flow("strict") as flow:
        bad = boom(1)
        add(1, 2)
    flow.set_reference_tasks([bad])
    state = flow.run(store=None)
    assert state.is_failed()
    assert "reference" in state.message and "boom" in state.message


def test_a_failed_child_fails_the_task_with_its_message_and_run_id(store_url):
    with Flow("breaks") as child:
        boom(Parameter("x"))
    with Flow("parent") as parent:
        broken = child(x=7)
        after = add(broken, 1)
        noticed = add(1, 2, upstream_tasks=[broken])
    noticed.trigger = any_failed
    state = parent.run(store=store_url)
    assert state.is_failed()
    failed = state.result[broken]
    assert failed.is_failed()
    child_id = subflow_run_id(f"{state.run_id}/{broken.slug}")
    assert child_id in failed.message and "'breaks'" in failed.message
    assert "boom" in failed.message  # the child's own message: which task failed
    assert failed.result.run_id == child_id  # the error, kept on the state
    assert state.result[after].name == "TriggerFailed"
    assert state.result[noticed].result == 3
    assert get_run(child_id, store=store_url).state == "Failed"


def test_a_map_of_children_runs_one_child_per_element(store_url, executor):
    child = adder()
    with Flow("parent") as parent:
        sums = child.map(x=[1, 2, 3], y=iterflow.unmapped(10))
        also = child.as_task().map(x=sums)
    state = parent.run(store=store_url, executor=executor)
    assert state.is_successful(), state
    assert state.result[sums].result == [11, 12, 13]
    assert state.result[also].result == [111, 112, 113]
    store = open_store(store_url)
    runs = list_runs(limit=None, store=store)
    assert sorted(r.flow_name for r in runs) == ["adder"] * 6 + ["parent"]


def test_a_child_in_a_loop_block_runs_once_per_iteration(store_url):
    child = adder()
    with Flow("parent") as parent:
        with loop(initial=0, max_loops=10) as it:
            total = child(x=it.result, y=it.index)
            it.next(result=total, until=at_least(total, 6))
        final = add(it.final, 0)
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    assert state.result[final].result == 0 + 0 + 1 + 2 + 3  # iterations 0..3


def test_a_retry_resumes_the_child_run_without_rerunning_its_finished_tasks(store_url):
    ran: list[str] = []
    attempts = {"n": 0}

    @task
    def slow_part(x):
        ran.append("slow_part")
        return x

    @task
    def flaky(x):
        ran.append("flaky")
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("first time unlucky")
        return x + 1

    with Flow("fragile") as child:
        flaky(slow_part(Parameter("x")))
    with Flow("parent") as parent:
        value = child.as_task(max_retries=1)(x=1)
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    assert state.result[value].result == 2
    assert ran == ["slow_part", "flaky", "flaky"]  # slow_part was not run again
    child_id = subflow_run_id(f"{state.run_id}/{value.slug}")
    runs = [r for r in list_runs(limit=None, store=store_url) if r.flow_name == "fragile"]
    assert [r.run_id for r in runs] == [child_id]  # one child run, resumed
    assert runs[0].state == "Success"
    by_slug = {t.task_slug: t for t in task_runs(child_id, store=store_url)}
    assert by_slug["flaky"].state == "Success"


def test_a_subflow_obeys_timeouts_and_triggers():
    release = threading.Event()

    @task
    def wait(x):
        release.wait(5)
        return x

    with Flow("sleepy") as child:
        wait(Parameter("x"))
    with Flow("parent") as parent:
        slow = child.as_task(timeout=0.2)(x=1)
        cleanup = add(1, 1, upstream_tasks=[slow])
    cleanup.trigger = all_finished
    started = time.monotonic()
    try:
        state = parent.run(store=None)
    finally:
        release.set()
    assert time.monotonic() - started < 4
    assert state.result[slow].name == "TimedOut"
    assert state.result[cleanup].result == 2


def test_child_tasks_see_their_own_run_in_the_context(store_url):
    seen = {}

    @task
    def look():
        ctx = iterflow.context
        seen.update(flow=ctx.flow_name, run=ctx.flow_run_id, block=ctx.get("block_index"),
                    params=dict(ctx.parameters))
        return ctx.flow_run_id

    with Flow("looker") as child:
        Parameter("p")
        look()
    child.set_reference_tasks(child.get_tasks(name="look"))
    with Flow("parent") as parent, loop(max_loops=1) as it:
        value = child(p=it.index)
        it.next(result=value, until=at_least(1, 0))
    state = parent.run(store=store_url, context={"user_key": 1})
    assert state.is_successful(), state
    assert seen["flow"] == "looker" and seen["run"] != state.run_id
    assert seen["block"] is None and seen["params"] == {"p": 0}


def test_a_task_failing_with_fail_inside_the_child_fails_the_parent_task():
    @task
    def refuse():
        raise FAIL("no thanks")

    with Flow("refuser") as child:
        refuse()
    with Flow("parent") as parent:
        t = child()
    state = parent.run(store=None)
    assert state.result[t].is_failed() and "no thanks" in state.result[t].message


def test_a_retry_after_a_timeout_waits_for_the_abandoned_child_then_resumes_it(store_url):
    ran: list[str] = []

    @task
    def slow_once(x):
        ran.append("slow_once")
        if ran.count("slow_once") == 1:
            time.sleep(1.5)  # longer than the subflow task's timeout
        return x

    @task
    def after(x):
        ran.append("after")
        return x + 1

    with Flow("slow child") as child:
        after(slow_once(Parameter("x")))
    with Flow("parent") as parent:
        value = child.as_task(timeout=1.0, max_retries=1)(x=1)
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    assert state.result[value].result == 2
    # The timed-out attempt's task finished and was kept; its child stopped before `after`.
    assert ran == ["slow_once", "after"]
    runs = [r for r in list_runs(limit=None, store=store_url) if r.flow_name == "slow child"]
    assert len(runs) == 1 and runs[0].state == "Success"


def test_a_child_may_call_a_flow_of_its_own(store_url, executor):
    from iterflow.store.children import child_runs
    from iterflow.store.children import list_runs as top_level_runs

    inner = adder()
    with Flow("middle") as middle:
        mul(inner(x=Parameter("x")), 2)
    with Flow("outer") as outer:
        values = middle.map(x=[1, 2])
    state = outer.run(store=store_url, executor=executor)
    assert state.is_successful(), state
    assert state.result[values].result == [202, 204]
    kids = child_runs(state.run_id, store=store_url)
    assert [k.flow_name for k in kids] == ["middle", "middle"]
    grandchildren = [g for k in kids for g in child_runs(k.run_id, store=store_url)]
    assert [g.flow_name for g in grandchildren] == ["adder", "adder"]
    assert [r.run_id for r in top_level_runs(store=store_url)] == [state.run_id]


def test_a_child_sharing_task_names_with_its_parent_still_resumes_on_retry(store_url):
    ran: list[str] = []
    attempts = {"n": 0}

    @task
    def count(x):
        ran.append(f"count {x}")
        return x

    @task
    def flaky(x):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("first time unlucky")
        return x + 1

    with Flow("shares names") as child:
        flaky(count(Parameter("x")))
    with Flow("parent") as parent:
        first = count(1)  # the same slug as the child's task
        value = child.as_task(max_retries=1)(x=first)
    state = parent.run(store=store_url)
    assert state.is_successful(), state
    assert state.result[value].result == 2
    assert ran == ["count 1", "count 1"]  # the parent's, then the child's: once each
