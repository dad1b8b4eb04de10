"""Parameters: values from flow.run(parameters=...), checked before any task runs."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, Parameter, task
from iterflow.errors import ParameterError

ran: list[str] = []


@task
def record(value):
    ran.append(value)
    return value


@pytest.fixture(autouse=True)
def _clear():
    ran.clear()


def make_flow():
    with Flow("greeting") as flow:
        who = Parameter("who")
        punctuation = Parameter("punctuation", default="!")
        out = record(who)
        mark = record(punctuation)
    return flow, who, punctuation, out, mark


def test_parameter_values_come_from_run(run):
    flow, who, _, out, mark = make_flow()
    state = run(flow, parameters={"who": "world"})
    assert state.result[who].result == "world"
    assert state.result[out].result == "world"
    assert state.result[mark].result == "!"
    state = run(flow, parameters={"who": "you", "punctuation": "?"})
    assert state.result[mark].result == "?"


def test_a_parameter_is_a_task_added_to_the_active_flow():
    flow, who, punctuation, *_ = make_flow()
    assert {who, punctuation} <= flow.tasks
    assert flow.parameters() == {who, punctuation}
    assert who.slug == "who"
    assert who.required is True and punctuation.required is False
    assert repr(who) == "<Parameter: who>"


def test_required_with_a_default_is_still_required():
    with Flow("strict") as flow:
        Parameter("n", default=3, required=True)
    with pytest.raises(ParameterError, match="'n'"):
        flow.run(store=None)


def test_missing_required_parameter_raises_before_any_task_runs():
    flow, *_ = make_flow()
    with pytest.raises(ParameterError) as info:
        flow.run(store=None)
    assert "who" in str(info.value)
    assert "greeting" in str(info.value)
    assert ran == []


def test_unknown_parameter_raises_before_any_task_runs_naming_it():
    flow, *_ = make_flow()
    with pytest.raises(ParameterError) as info:
        flow.run(parameters={"who": "x", "colour": "red"}, store=None)
    assert "colour" in str(info.value)
    assert "punctuation" in str(info.value)  # lists the valid ones
    assert ran == []


def test_parameters_are_in_context(run):
    @task
    def read():
        return dict(iterflow.context.parameters)

    with Flow("ctx params") as flow:
        Parameter("a", default=1)
        out = read()
    assert run(flow, parameters={"a": 5}).result[out].result == {"a": 5}
    assert run(flow).result[out].result == {"a": 1}


def test_parameter_names_are_unique_in_a_flow():
    with Flow("dups"):
        Parameter("x")
        with pytest.raises(ParameterError, match="'x'"):
            Parameter("x")


def test_parameter_needs_a_name_and_is_not_called():
    with pytest.raises(ValueError):
        Parameter("")
    with Flow("call"):
        p = Parameter("p")
        with pytest.raises(TypeError, match="not called"):
            p()


def test_parameter_outside_a_flow_joins_the_flow_that_uses_it(run):
    p = Parameter("outside", default=7)
    with Flow("later") as flow:
        out = record(p)
    assert p in flow.tasks
    assert run(flow).result[out].result == 7
