"""Building flows that call flows: parameters checked against the child, cycles refused."""

from __future__ import annotations

import pytest

from iterflow import Flow, Parameter, task
from iterflow.core.subflow import SubflowTask
from iterflow.errors import (
    ArgumentError,
    CycleError,
    FlowDefinitionError,
    OutsideFlowError,
    ParameterError,
    SubflowParameterError,
)


@task
def add(x, y):
    return x + y


def child_flow(name: str = "child") -> Flow:
    with Flow(name) as child:
        add(Parameter("x"), Parameter("y", default=10))
    return child


def test_calling_a_flow_inside_a_flow_adds_a_subflow_task_with_its_inputs_as_edges():
    child = child_flow()
    with Flow("parent") as parent:
        x = Parameter("x")
        a = child(x=x)
        b = child.as_task(max_retries=2, name="again")(x=1, y=2)
    assert isinstance(a, SubflowTask) and a.flow is child and a.name == "child"
    assert b.name == "again" and b.max_retries == 2
    assert parent.upstream_tasks(a) == {x}
    assert parent.constants[b] == {"x": 1, "y": 2}
    parent.validate()


def test_an_unknown_parameter_is_refused_at_once_naming_both_flows():
    child = child_flow()
    with Flow("parent") as parent, pytest.raises(SubflowParameterError) as caught:
        child(x=1, z=2)
    message = str(caught.value)
    assert "'parent'" in message and "'child'" in message and "z" in message
    assert "x, y" in message  # what it takes
    # Both what a bad call and a bad parameter are, to `except` clauses.
    assert isinstance(caught.value, ParameterError) and isinstance(caught.value, ArgumentError)
    assert not parent.tasks


def test_a_missing_required_parameter_is_refused_at_once_naming_both_flows():
    child = child_flow()
    with Flow("parent"), pytest.raises(SubflowParameterError, match="required parameter") as c:
        child(y=1)
    assert "'parent'" in str(c.value) and "'child'" in str(c.value) and "x" in str(c.value)


def test_positional_inputs_are_refused_since_a_flow_takes_parameters_by_name():
    child = child_flow()
    with Flow("parent"), pytest.raises(SubflowParameterError, match="by name"):
        child(1)


def test_calling_a_flow_outside_a_flow_says_where_to_call_it():
    with pytest.raises(OutsideFlowError):
        child_flow()(x=1)


def test_a_flow_calling_itself_is_a_cycle_error_at_build_time():
    with Flow("again") as again, pytest.raises(CycleError) as caught:
        again()
    assert "'again' -> 'again'" in str(caught.value)
    assert caught.value.path == ["again", "again"]


def test_a_flow_calling_itself_through_others_is_a_cycle_error_naming_the_chain():
    a, b, c = Flow("a"), Flow("b"), Flow("c")
    with b:
        a()
    with c:
        b()
    with a, pytest.raises(CycleError) as caught:
        c()
    assert caught.value.path == ["a", "c", "b", "a"]
    assert "'a' -> 'c' -> 'b' -> 'a'" in str(caught.value)


def test_validate_finds_a_cycle_made_by_adding_subflow_tasks_by_hand():
    a, b = Flow("a"), Flow("b")
    with b:
        a()
    a.add_task(SubflowTask(b))  # add_task does not check calls; validate does
    with pytest.raises(CycleError, match="circle"):
        a.validate()


def test_calling_the_same_flow_twice_is_not_a_cycle():
    child = child_flow()
    with Flow("parent") as parent:
        first = child(x=1)
        child(x=first)
    parent.validate()


def test_reference_tasks_default_to_the_terminal_tasks_and_can_be_set():
    with Flow("refs") as flow:
        a = add(1, 2)
        b = add(a, 3)
    assert flow.reference_tasks() == {b}
    flow.set_reference_tasks([a])
    assert flow.reference_tasks() == {a}
    flow.set_reference_tasks([])
    assert flow.reference_tasks() == {b}
    flow.set_reference_tasks(a)  # one task alone will do
    assert flow.reference_tasks() == {a}


def test_a_reference_task_must_be_in_the_flow():
    with Flow("other"):
        stranger = add(1, 2)
    with Flow("refs") as flow:
        add(1, 2)
    with pytest.raises(FlowDefinitionError, match="not in the flow"):
        flow.set_reference_tasks([stranger])


def test_a_subflow_task_accepts_exactly_the_child_parameters():
    # Parameters added to the child after the call are asked for at validation.
    with Flow("grows") as child:
        Parameter("x")
    with Flow("parent") as parent:
        child(x=1)
    with child:
        Parameter("needed")
    with pytest.raises(ArgumentError, match="needed"):
        parent.validate()
