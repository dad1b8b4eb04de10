"""Tasks: @task and Task subclasses, options, copies on call, indexing and unpacking."""

from __future__ import annotations

import datetime
import pickle
import threading

import pytest

from iterflow import Flow, Task, task
from iterflow.core.helpers import GetItem
from iterflow.core.task import FunctionTask


@task
def add(x, y):
    return x + y


class Double(Task):
    def run(self, x):
        return 2 * x


def test_task_decorator_makes_a_function_task_named_after_the_function():
    assert isinstance(add, FunctionTask)
    assert add.name == "add"
    assert add.run(1, 2) == 3  # the function itself is still callable via run()


def test_task_decorator_with_options():
    @task(name="fetcher", max_retries=3, retry_delay=datetime.timedelta(seconds=2), timeout=5,
          cache_for=datetime.timedelta(minutes=1), max_loops=10, tags=["io"], nout=2,
          checkpoint="every", cache_key="k", log_stdout=True)
    def fetch():
        return 1, 2

    assert fetch.name == "fetcher"
    assert fetch.max_retries == 3
    assert fetch.retry_delay == 2.0
    assert fetch.timeout == 5.0
    assert fetch.cache_for == 60.0
    assert fetch.max_loops == 10
    assert fetch.tags == frozenset({"io"})
    assert fetch.nout == 2
    assert fetch.checkpoint == "every"
    assert fetch.cache_key == "k"
    assert fetch.log_stdout is True


def test_task_defaults():
    from iterflow.triggers import all_successful

    assert add.max_retries == 0
    assert add.retry_delay == 0
    assert add.timeout is None
    assert add.max_loops is None
    assert add.trigger is all_successful
    assert add.skip_on_upstream_skip is True
    assert add.state_handlers == []


@pytest.mark.parametrize(
    "options, words",
    [
        ({"max_retries": -1}, ["max_retries", "-1"]),
        ({"max_retries": 1.5}, ["max_retries"]),
        ({"max_loops": 0}, ["max_loops", "0"]),
        ({"retry_delay": -2}, ["retry_delay"]),
        ({"timeout": 0}, ["timeout"]),
        ({"timeout": "soon"}, ["timeout", "soon"]),
        ({"checkpoint": "sometimes"}, ["checkpoint", "sometimes"]),
        ({"nout": -1}, ["nout"]),
    ],
)
def test_bad_options_are_refused_naming_the_task(options, words):
    with pytest.raises(ValueError) as info:
        task(lambda: None, name="picky", **options)
    for word in ["picky", *words]:
        assert word in str(info.value)


def test_task_needs_a_callable():
    with pytest.raises(TypeError, match="needs a function"):
        FunctionTask(42)


def test_task_subclass_runs_and_binds_its_run_signature(run):
    with Flow("subclass") as flow:
        doubled = Double()(x=21)
    assert doubled.name == "Double"
    assert run(flow).result[doubled].result == 42


def test_task_subclass_without_run_fails_its_run(run):
    with Flow("no run") as flow:
        empty = Task(name="empty")()
    state = run(flow).result[empty]
    assert state.is_failed()
    assert "does not implement run()" in state.message


def test_calling_a_task_adds_a_copy_and_leaves_the_original_alone():
    with Flow("copies") as flow:
        first = add(1, 2)
        second = add(first, 3)
    assert first is not add and second is not add and first is not second
    assert add.slug is None
    assert flow.tasks == {first, second}
    assert add not in flow.tasks
    assert {(e.upstream_task, e.downstream_task, e.key) for e in flow.edges} == {
        (first, second, "x")
    }
    assert flow.constants[first] == {"x": 1, "y": 2}
    assert flow.constants[second] == {"y": 3}


def test_copy_has_its_own_state_handler_list_and_options():
    def handler(t, old, new):
        return new

    original = task(lambda: None, name="h", state_handlers=[handler])
    copy = original.copy(max_retries=4)
    copy.state_handlers.append(handler)
    assert original.state_handlers == [handler]
    assert copy.max_retries == 4 and original.max_retries == 0
    with pytest.raises(TypeError, match="no option 'colour'"):
        original.copy(colour="red")


def test_slugs_are_unique_within_a_flow():
    with Flow("slugs") as flow:
        a = add(1, 1)
        b = add(a, 1)
        c = add(b, 1)
    assert [a.slug, b.slug, c.slug] == ["add", "add-2", "add-3"]
    assert flow.get_tasks(name="add") == [a, b, c]
    assert flow.get_tasks(slug="add-2") == [b]


def test_slugs_skip_names_already_taken():
    with Flow("taken") as flow:
        explicit = add.copy(name="add-3")(1, 1)
        calls = [add(1, 1) for _ in range(4)]
    assert explicit.slug == "add-3"
    assert [t.slug for t in calls] == ["add", "add-2", "add-4", "add-5"]
    assert len({t.slug for t in flow.tasks}) == 5


def test_a_task_already_in_one_flow_cannot_be_added_to_another():
    from iterflow.errors import FlowDefinitionError

    with Flow("one") as one:
        a = add(1, 2)
    assert a in one.tasks
    with pytest.raises(FlowDefinitionError, match="already belongs to another flow"):
        Flow("two").add_task(a)
    with Flow("two") as two:
        b = a(3, 4)  # calling it makes a fresh copy: fine
    assert b in two.tasks and b.slug == "add"


@pytest.mark.parametrize(
    "args, kwargs, why",
    [
        ((1,), {}, "missing a required argument: 'y'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1, 2), {"z": 3}, "unexpected keyword argument 'z'"),
    ],
)
def test_calling_with_arguments_the_function_cannot_take_is_a_type_error_at_build_time(
    args, kwargs, why
):
    with Flow("bad call") as flow, pytest.raises(TypeError) as info:
        add(*args, **kwargs)
    message = str(info.value)
    assert "'add'" in message and "bad call" in message and why in message
    assert "x, y" in message  # what it does accept
    assert flow.tasks == set()  # nothing half-added


def test_task_subclass_wrong_arguments_is_a_type_error_naming_the_task():
    with Flow("bad subclass"), pytest.raises(TypeError, match="'Double'"):
        Double()(y=1)


def test_calling_a_task_outside_a_flow_is_a_clear_error():
    with pytest.raises(RuntimeError) as info:
        add(1, 2)
    assert "'add'" in str(info.value)
    assert "outside a flow" in str(info.value)
    assert "with Flow(" in str(info.value)


def test_kwargs_functions_accept_any_keyword(run):
    @task
    def collect(**kw):
        return sorted(kw.items())

    with Flow("kwargs") as flow:
        out = collect(b=2, a=1)
    assert run(flow).result[out].result == [("a", 1), ("b", 2)]


def test_upstream_tasks_adds_ordering_edges_without_data(run):
    order = []

    @task
    def first():
        order.append("first")

    @task
    def second():
        order.append("second")

    with Flow("ordering") as flow:
        b = second()
        a = first()
        b.set_upstream(a)
        c = second(upstream_tasks=[a])
    edges = {(e.upstream_task, e.downstream_task, e.key) for e in flow.edges}
    assert edges == {(a, b, None), (a, c, None)}
    run(flow)
    assert order[0] == "first"


def test_upstream_tasks_must_be_tasks():
    with Flow("bad upstream"), pytest.raises(TypeError, match="upstream_tasks takes tasks"):
        add(1, 2, upstream_tasks=[42])


def test_indexing_adds_an_item_getting_task(run):
    @task
    def pair():
        return [10, {"k": "v"}]

    with Flow("index") as flow:
        p = pair()
        first = p[0]
        value = p[1]["k"]
    assert isinstance(first, GetItem)
    assert first.name == "pair[0]"
    assert flow.upstream_tasks(first) == {p}
    state = run(flow)
    assert state.result[first].result == 10
    assert state.result[value].result == "v"


def test_indexing_a_missing_key_fails_that_task_with_a_clear_message(run):
    @task
    def mapping():
        return {"a": 1}

    with Flow("bad index") as flow:
        missing = mapping()["b"]
    state = run(flow).result[missing]
    assert state.is_failed()
    assert "cannot index a dict with 'b'" in state.message


def test_indexing_outside_a_flow_is_an_error():
    with pytest.raises(RuntimeError, match="needs an active flow"):
        add["k"]


def test_nout_unpacks_the_result_into_tasks(run):
    @task(nout=3)
    def three():
        return "a", "b", "c"

    with Flow("nout") as flow:
        a, b, c = three()
    state = run(flow)
    assert [state.result[t].result for t in (a, b, c)] == ["a", "b", "c"]


def test_unpacking_without_nout_is_a_type_error_that_says_how_to_fix_it():
    with Flow("no nout"), pytest.raises(TypeError, match="nout=N"):
        _, _ = add(1, 2)


def test_repr_names_the_task():
    with Flow("repr"):
        a = add(1, 2)
        b = add(1, 2)
    assert repr(a) == "<Task: add>"
    assert repr(b) == "<Task: add (add-2)>"


def test_a_function_with_star_args_cannot_take_arguments_through_them():
    @task
    def total(*numbers):
        return sum(numbers)

    with Flow("star args") as flow:
        total()  # nothing for *numbers: fine
        with pytest.raises(TypeError) as info:
            total(1, 2)
    assert "'total'" in str(info.value) and "*numbers" in str(info.value)
    assert "by keyword" in str(info.value)
    assert len(flow.tasks) == 1


def test_a_function_is_inspected_once_however_many_times_a_flow_calls_it(monkeypatch):
    import iterflow.core.task as task_module

    inspected = []
    real_signature = task_module.inspect.signature

    def counting_signature(obj, *args, **kwargs):
        inspected.append(obj)
        return real_signature(obj, *args, **kwargs)

    monkeypatch.setattr(task_module.inspect, "signature", counting_signature)

    def inc(x):
        return x + 1

    step, double = task(inc), Double()
    with Flow("chain") as flow:
        last = step(0)
        for _ in range(49):
            last = double(step(last))
    flow.validate()
    assert len(flow.tasks) == 99
    assert len(inspected) == 2  # once for inc, once for Double.run: not once per copy


def test_the_cached_signature_still_refuses_inputs_a_copy_cannot_take():
    flow = Flow("shared shape")
    one = task(lambda: 1, name="one")
    good, bad = add.copy(), add.copy()
    flow.add_edge(one.copy(), good, key="x")
    flow.add_edge(one.copy(), good, key="y")
    flow.add_edge(one.copy(), bad, key="x")
    flow.add_edge(one.copy(), bad, key="z")
    with pytest.raises(TypeError, match=r"inputs \['x', 'z'\]"):
        flow.validate()


def test_a_copy_that_replaces_the_function_is_inspected_afresh():
    other = add.copy(fn=lambda a: a)
    with Flow("replaced"):
        other(a=1)
        with pytest.raises(TypeError, match="cannot be called this way"):
            other(x=1, y=2)


class Locked(Task):
    def run(self, x, lock=threading.Lock()):  # noqa: B008 - the unpicklable default is the point
        return x


def test_a_task_pickles_without_its_cached_signature():
    # The signature holds the function's defaults; a task sent to a worker must not need
    # them to pickle, as before signatures were cached.
    with Flow("pickled") as flow:
        copy_ = Locked()(1)
    flow.validate()
    again = pickle.loads(pickle.dumps(copy_))
    assert again.name == "Locked"
    assert list(again._call_shape().signature.parameters) == ["x", "lock"]
