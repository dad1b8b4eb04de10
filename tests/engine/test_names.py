"""Task run names and iteration labels: options, build-time checks, run-time rules.

The executor suite (``tests/executors/test_names.py``) runs the same on
threads and Dask; here the rules themselves, on the default executor.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import iterflow
from iterflow import LOOP, Flow, Task, loop, task
from iterflow.errors import FlowDefinitionError, OptionError, TaskRunNameError
from iterflow.naming import MAX_LENGTH, clean_text
from iterflow.runtime import run_flow


def _events(sink, slug):
    return [e for e in sink.events
            if type(e).__name__ == "TaskRunEvent" and e.task_slug == slug]


# -- task_run_name: the option --------------------------------------------------------
def test_a_format_string_over_the_inputs_defaults_included(run, sink):
    @task(task_run_name="fetch {url} x{times} {meta[k]}")
    def fetch(url, meta, times=2):
        return url

    with Flow("names") as flow:
        fetch("u", {"k": "v"})
    assert run(flow).is_successful()
    assert {e.task_run_name for e in _events(sink, "fetch")} == {"fetch u x2 v"}


def test_a_mapped_child_is_named_from_its_own_element(run, sink):
    @task(task_run_name="page {n}")
    def page(n, base):
        return n + base

    with Flow("mapped names") as flow:
        page.map([1, 2, 3], base=iterflow.unmapped(10))
    assert run(flow).is_successful()
    names = {e.map_index: e.task_run_name for e in _events(sink, "page")
             if e.map_index is not None}
    assert names == {0: "page 1", 1: "page 2", 2: "page 3"}


def test_a_callable_gets_the_inputs_as_keywords(run, sink):
    seen = []

    def name(**inputs):
        seen.append(inputs)
        return f"{inputs['a']}+{inputs['b']}"

    @task(task_run_name=name)
    def add(a, b=5):
        if iterflow.context.loop_index < 3:
            raise LOOP()
        return a + b

    with Flow("callable name") as flow:
        add(1)
    assert run(flow).is_successful()
    assert seen == [{"a": 1, "b": 5}]  # once per task run, not per iteration
    assert {e.task_run_name for e in _events(sink, "add")} == {"1+5"}


def test_the_name_is_in_the_context_and_the_task_name_without_one(run):
    got = {}

    @task(task_run_name="named {x}")
    def named(x):
        got["named"] = iterflow.context.task_run_name

    @task
    def plain():
        got["plain"] = iterflow.context.task_run_name

    with Flow("context names") as flow:
        named(1)
        plain()
    assert run(flow).is_successful()
    assert got == {"named": "named 1", "plain": "plain"}


def test_a_name_that_fails_at_run_time_falls_back_and_warns(run, sink, caplog):
    def broken(**inputs):
        raise RuntimeError("no name today")

    @task(task_run_name=broken)
    def first():
        return 1

    @task(task_run_name="{x.missing}")
    def second(x):
        return x

    with Flow("broken names") as flow:
        first()
        second(3)
    with caplog.at_level(logging.WARNING, logger="iterflow.task"):
        state = run(flow)
    assert state.is_successful()  # the task did not fail because of its name
    assert {e.task_run_name for e in _events(sink, "first")} == {"first"}
    assert {e.task_run_name for e in _events(sink, "second")} == {"second"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no name today" in m and "'first'" in m for m in warned)
    assert any("'second'" in m and "AttributeError" in m for m in warned)
    # The warning is recorded with the task run, like any line of its logger.
    assert any("no name today" in log.message for log in sink.logs)


def test_a_long_name_is_cut():
    text = clean_text("n" * 500)
    assert text is not None and len(text) == MAX_LENGTH and text.endswith("…")
    assert clean_text("") is None and clean_text(None) is None and clean_text(7) == "7"


def test_an_unknown_input_is_refused_when_the_flow_is_built():
    @task(task_run_name="fetch {uri}")
    def fetch(url):
        return url

    with pytest.raises(TaskRunNameError) as caught, Flow("typo flow"):
        fetch("x")
    assert isinstance(caught.value, FlowDefinitionError) and isinstance(caught.value, OptionError)
    message = str(caught.value)
    assert "'fetch'" in message and "'typo flow'" in message and "{uri}" in message
    assert "url" in message  # the inputs it has


def test_an_unknown_input_added_imperatively_is_refused_before_anything_runs():
    ran = []

    @task
    def before():
        ran.append(1)

    def fetch(url="default"):
        return url

    bad = iterflow.core.task.FunctionTask(fetch, task_run_name="{nope}")
    flow = Flow("imperative")
    flow.add_task(before)
    flow.add_task(bad)
    with pytest.raises(FlowDefinitionError, match=r"'imperative'.*nope|nope.*'imperative'"):
        flow.run(store=None)
    assert ran == []


def test_positional_fields_and_bad_format_strings_are_refused():
    @task(task_run_name="page {}")
    def page(n):
        return n

    @task(task_run_name="page {n")
    def broken(n):
        return n

    with pytest.raises(FlowDefinitionError, match="positional"), Flow("f"):
        page(1)
    with pytest.raises(FlowDefinitionError, match="not a valid format string"), Flow("f"):
        broken(1)


def test_kwargs_tasks_accept_any_field(run, sink):
    @task(task_run_name="call {who}")
    def call(**kwargs):
        return kwargs

    with Flow("kwargs") as flow:
        call(who="me")
    assert run(flow).is_successful()
    assert {e.task_run_name for e in _events(sink, "call")} == {"call me"}


def test_an_invalid_option_value_is_an_option_error():
    with pytest.raises(OptionError, match="task_run_name"):
        task(task_run_name=42)(lambda: None)
    with pytest.raises(ValueError):  # OptionError is a ValueError
        Task(task_run_name=["x"])

    @task
    def plain(x):
        return x

    renamed = plain.copy(task_run_name="plain {x}")
    assert renamed.task_run_name == "plain {x}" and plain.task_run_name is None
    with pytest.raises(OptionError):
        plain.copy(task_run_name=3.5)


def test_a_task_subclass_takes_the_option(run, sink):
    class Fetch(Task):
        def run(self, url):
            return url

    with Flow("subclass") as flow:
        Fetch(task_run_name="get {url}")(url="x")
    assert run(flow).is_successful()
    assert {e.task_run_name for e in _events(sink, "Fetch")} == {"get x"}


# -- iteration labels ----------------------------------------------------------------------
def test_labels_last_call_wins_and_loop_label_wins(run, sink):
    @task
    def pager():
        i = iterflow.context.loop_index
        iterflow.set_iteration_label("first try")
        iterflow.set_iteration_label(f"page {i}")
        if i == 0:
            raise LOOP(result=i)
        if i == 1:
            raise LOOP(result=i, label="from LOOP")
        if i == 2:
            raise LOOP(label="x" * 1000)
        return i

    with Flow("labels") as flow:
        pager()
    assert run(flow).is_successful()
    ends = [(e.state.name, e.loop_index, e.label) for e in _events(sink, "pager")
            if e.state.name != "Running"]
    assert ends[:2] == [("Looped", 0, "page 0"), ("Looped", 1, "from LOOP")]
    assert ends[2][2] == "x" * (MAX_LENGTH - 1) + "…"
    assert ends[3] == ("Success", 3, "page 3")


def test_an_iteration_without_a_label_has_none(run, sink):
    @task
    def sometimes():
        i = iterflow.context.loop_index
        if i % 2 == 0:
            iterflow.set_iteration_label(f"even {i}")
        if i < 3:
            raise LOOP()

    with Flow("sometimes") as flow:
        sometimes()
    assert run(flow).is_successful()
    labels = [e.label for e in _events(sink, "sometimes") if e.state.name != "Running"]
    assert labels == ["even 0", None, "even 2", None]


def test_a_retried_iteration_keeps_the_label_of_its_last_attempt(run, sink):
    tries = {"n": 0}

    @task(max_retries=1)
    def flaky():
        i = iterflow.context.loop_index
        iterflow.set_iteration_label(f"iteration {i} attempt {iterflow.context.task_run_count}")
        if i == 1 and tries["n"] == 0:
            tries["n"] += 1
            raise ValueError("once")
        if i < 2:
            raise LOOP()

    with Flow("flaky") as flow:
        flaky()
    assert run(flow).is_successful()
    ends = [(e.state.name, e.loop_index, e.label) for e in _events(sink, "flaky")
            if e.state.name in ("Looped", "Success")]
    assert ends == [("Looped", 0, "iteration 0 attempt 1"), ("Looped", 1, "iteration 1 attempt 2"),
                    ("Success", 2, "iteration 2 attempt 1")]


def test_outside_a_run_set_iteration_label_does_nothing():
    before = dict(iterflow.context)
    iterflow.set_iteration_label("nowhere")
    iterflow.context.set_iteration_label("nowhere")
    with iterflow.context(user="x"):
        iterflow.set_iteration_label("still nowhere")
    assert dict(iterflow.context) == before


def test_a_task_function_called_directly_can_label():
    @task
    def labelled(x):
        iterflow.set_iteration_label(f"x={x}")
        return x

    assert labelled.run(4) == 4  # a unit test calling the function: no run, no error


def test_async_tasks_name_and_label(sink):
    @task(task_run_name="poll {job}")
    async def poll(job):
        i = iterflow.context.loop_index
        await asyncio.sleep(0)
        iterflow.set_iteration_label(f"attempt {i}")
        if i < 2:
            raise LOOP(label=f"waiting {i}" if i == 1 else None)
        return i

    with Flow("async names") as flow:
        poll("j1")
        poll.map(["m0", "m1"])
    state = run_flow(flow, store=None, sinks=[sink])
    assert state.is_successful()
    single = [e for e in _events(sink, "poll") if e.map_index is None]
    assert {e.task_run_name for e in single} == {"poll j1"}
    assert [e.label for e in single if e.state.name != "Running"] == [
        "attempt 0", "waiting 1", "attempt 2"]
    children = {e.map_index: e.task_run_name for e in _events(sink, "poll-2")
                if e.map_index is not None}
    assert children == {0: "poll m0", 1: "poll m1"}


def test_loop_block_labels_from_text_and_inline_body_labels(sink):
    @task
    def step(total, i):
        iterflow.set_iteration_label(f"step of {i}")
        return total + i

    @task
    def enough(total):
        return total >= 3

    with Flow("block text labels") as flow, loop(initial=0, max_loops=10, name="blk") as it:
        total = step(it.result, it.index)
        it.next(result=total, until=enough(total), label="round {index}")
    state = run_flow(flow, store=None, sinks=[sink])
    assert state.is_successful()
    block = [(e.state.name, e.label) for e in _events(sink, "blk") if e.label]
    # Totals 0, 1, 3: the loop ends after iteration 2.
    assert block == [("Looped", "round 0"), ("Looped", "round 1"), ("Success", "round 2")]
    steps = [e.label for e in _events(sink, "step") if e.state.is_finished()]
    assert steps == ["step of 0", "step of 1", "step of 2"]


def test_it_next_label_must_be_a_task_of_the_block():
    @task
    def outside():
        return "x"

    @task
    def step(total):
        return total + 1

    @task
    def enough(total):
        return True

    with pytest.raises(FlowDefinitionError, match="label"), Flow("bad label"):
        label = outside()
        with loop(initial=0, max_loops=3) as it:
            total = step(it.result)
            it.next(result=total, until=enough(total), label=label)


# -- a property: the label recorded for each iteration is the one the rules give ----------
from hypothesis import given, settings  # noqa: E402 - the property tests' own imports
from hypothesis import strategies as st  # noqa: E402

_text = st.one_of(st.none(), st.text(max_size=5), st.text(min_size=199, max_size=260))
#: Per iteration: the set_iteration_label calls made, and LOOP's label (the last one returns).
_plan = st.lists(st.tuples(st.lists(_text, max_size=3), _text), min_size=1, max_size=6)


def _expected(calls: list, loop_label) -> str | None:
    if loop_label is not None:
        return clean_text(loop_label)
    return clean_text(calls[-1]) if calls else None


@settings(max_examples=40, deadline=None)
@given(plan=_plan, is_async=st.booleans())
def test_recorded_labels_follow_the_rules(plan, is_async):
    from tests.conftest import InvariantSink

    def body():
        calls, loop_label = plan[iterflow.context.loop_index]
        for text in calls:
            iterflow.set_iteration_label(text)
        if iterflow.context.loop_index < len(plan) - 1:
            raise LOOP(label=loop_label)
        return "done"

    if is_async:
        async def labelled():
            return body()
    else:
        def labelled():
            return body()

    with Flow("label property") as flow:
        task(labelled)()
    sink = InvariantSink()
    assert run_flow(flow, store=None, sinks=[sink]).is_successful()
    got = [e.label for e in _events(sink, "labelled") if e.state.name != "Running"]
    # The last iteration returns: only set_iteration_label labels it.
    want = [_expected(c, lbl) for c, lbl in plan[:-1]] + [_expected(plan[-1][0], None)]
    assert got == want
