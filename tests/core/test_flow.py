"""Flows: the imperative API, reading the graph, validation and cycles."""

from __future__ import annotations

import pytest

import iterflow
from iterflow import Flow, Task, task
from iterflow.errors import CycleError, FlowDefinitionError


@task
def inc(x):
    return x + 1


@task
def source():
    return 1


class Add(Task):
    def run(self, x, y):
        return x + y


def test_flow_needs_a_name():
    with pytest.raises(ValueError, match="non-empty name"):
        Flow("")


def test_with_flow_sets_and_restores_the_active_flow():
    assert Flow.active() is None
    with Flow("outer") as outer:
        assert Flow.active() is outer
        with Flow("inner") as inner:
            assert Flow.active() is inner
        assert Flow.active() is outer
    assert Flow.active() is None


def test_imperative_api_builds_and_runs_a_flow(run):
    flow = Flow("imperative")
    a, b, c = source.copy(), inc.copy(), Add()
    assert flow.add_task(a) is a
    flow.add_edge(a, b, key="x")
    flow.set_dependencies(c, keyword_tasks={"x": b, "y": 10}, upstream_tasks=[a])
    assert flow.tasks == {a, b, c}
    assert len(flow.edges) == 3
    assert flow.root_tasks() == {a}
    assert flow.terminal_tasks() == {c}
    assert flow.sorted_tasks() == (a, b, c)
    assert flow.upstream_tasks(c) == {a, b}
    assert flow.downstream_tasks(a) == {b, c}
    assert {e.key for e in flow.upstream_edges(c)} == {"x", None}
    assert [e.downstream_task for e in flow.downstream_edges(b)] == [c]
    flow.validate()
    assert run(flow).result[c].result == 12


def test_set_dependencies_downstream_and_mapped(run):
    flow = Flow("set deps")
    xs = task(lambda: [1, 2, 3], name="xs")
    m = inc.copy()
    total = task(lambda values: sum(values), name="total")
    flow.set_dependencies(m, keyword_tasks={"x": xs}, mapped=True, downstream_tasks=[])
    flow.set_dependencies(total, keyword_tasks={"values": m})
    (edge,) = flow.upstream_edges(m)
    assert edge.mapped and edge.key == "x"
    state = run(flow)
    assert state.result[m].result == [2, 3, 4]
    assert state.result[total].result == 9


def test_add_task_is_idempotent_and_needs_a_task():
    flow = Flow("idem")
    a = inc.copy()
    flow.add_task(a)
    flow.add_task(a)
    assert flow.tasks == {a}
    with pytest.raises(TypeError, match="needs a Task"):
        flow.add_task(lambda: 1)


def test_add_edge_adds_its_tasks_and_refuses_a_second_input_of_the_same_name():
    flow = Flow("dup input")
    a, b, c = source.copy(), source.copy(), inc.copy()
    flow.add_edge(a, c, key="x")
    assert flow.tasks == {a, c}
    with pytest.raises(FlowDefinitionError, match="already has an input 'x'"):
        flow.add_edge(b, c, key="x")


def test_edge_repr():
    flow = Flow("edges")
    a, b = source.copy(), inc.copy()
    edge = flow.add_edge(a, b, key="x", mapped=True)
    assert repr(edge) == "<Edge source -> inc [x, mapped]>"


def test_a_cycle_is_rejected_at_once_with_its_path():
    flow = Flow("cyclic")
    a, b, c = (task(lambda x=None: x, name=n) for n in "abc")
    flow.add_edge(a, b)
    flow.add_edge(b, c)
    with pytest.raises(CycleError) as info:
        flow.add_edge(c, a)
    assert "a -> b -> c -> a" in str(info.value)
    assert "cyclic" in str(info.value)
    assert info.value.path == ["a", "b", "c", "a"]
    assert len(flow.edges) == 2  # the edge was not added
    flow.validate()


def test_a_self_edge_is_a_cycle():
    flow = Flow("self")
    a = source.copy()
    with pytest.raises(CycleError, match="source -> source"):
        flow.add_edge(a, a)


def test_a_cycle_through_calls_is_rejected_too():
    with Flow("call cycle") as flow:
        a = inc(1)
        b = inc(a)
        with pytest.raises(CycleError, match="inc -> inc-2 -> inc"):
            a.set_upstream(b, flow=flow)


def test_sorted_tasks_keeps_insertion_order_among_independent_tasks():
    with Flow("order") as flow:
        tasks = [source() for _ in range(5)]
        last = Add()(x=tasks[4], y=tasks[0])
    assert flow.sorted_tasks() == (*tasks, last)


def test_validate_refuses_a_task_whose_inputs_the_function_cannot_take():
    flow = Flow("bad inputs")
    a, b = source.copy(), inc.copy()
    flow.add_edge(a, b, key="nope")
    with pytest.raises(TypeError) as info:
        flow.validate()
    assert "'inc'" in str(info.value) and "bad inputs" in str(info.value)
    assert "nope" in str(info.value)


def test_validate_refuses_a_task_missing_a_required_input():
    flow = Flow("missing input")
    flow.add_task(inc.copy())
    with pytest.raises(TypeError, match="'inc'"):
        flow.validate()


def test_flow_run_validates_before_running_anything():
    ran = []
    flow = Flow("invalid")
    first = task(lambda: ran.append(1), name="first")
    flow.add_task(first)
    flow.add_task(inc.copy())  # no x
    with pytest.raises(TypeError):
        flow.run(store=None)
    assert ran == []


def test_validate_refuses_an_edge_to_a_task_outside_the_flow():
    flow = Flow("outside")
    a, b = source.copy(), inc.copy()
    edge = flow.add_edge(a, b, key="x")
    del flow._tasks[b]  # simulate a corrupted graph
    with pytest.raises(FlowDefinitionError, match="not in the flow"):
        flow.validate()
    assert edge in flow.edges


def test_flatten_is_only_for_mapped_arguments():
    with Flow("flatten"), pytest.raises(FlowDefinitionError, match=r"flatten\(\) only"):
        inc(iterflow.flatten([[1]]))


def test_flow_run_returns_a_state_with_a_result_per_task(run):
    with Flow("results") as flow:
        a = source()
        b = inc(a)
    state = run(flow)
    assert state.is_successful()
    assert state.run_id
    assert set(state.result) == {a, b}
    assert state.result[b].result == 2


def test_flow_run_uses_the_flows_default_executor(sink):
    used = []

    class Recording(iterflow.executors.LocalExecutor):
        def submit(self, fn, *args, key=None, shared=None):
            used.append(key)
            return super().submit(fn, *args, key=key, shared=shared)

    with Flow("default executor", executor=Recording()) as flow:
        inc(1)
    iterflow.runtime.run_flow(flow, store=None, sinks=[sink])
    assert len(used) == 1


def test_repr():
    with Flow("shown") as flow:
        inc(1)
    assert repr(flow) == "<Flow 'shown': 1 tasks>"


def test_sorted_tasks_follows_edges_added_after_it_was_asked():
    flow = Flow("reorder")
    a, b = source.copy(), inc.copy()
    flow.add_task(b)
    flow.add_task(a)
    assert flow.sorted_tasks() == (b, a)
    flow.add_edge(a, b, key="x")
    assert flow.sorted_tasks() == (a, b)
    c = source.copy()
    flow.add_task(c)
    assert flow.sorted_tasks() == (a, b, c)


def test_tasks_of_finds_tasks_by_type_in_the_order_they_were_added():
    from iterflow import Parameter
    from iterflow.core.task import FunctionTask

    with Flow("kinds") as flow:
        n = Parameter("n")
        a = inc(n)
        b = Add()(a, source())
        m = Parameter("m")
    assert flow.tasks_of(Parameter) == [n, m]
    assert flow.tasks_of(Add) == [b]
    assert [t.name for t in flow.tasks_of(FunctionTask)] == ["inc", "source"]
    assert flow.tasks_of(Task) == list(flow._tasks)  # every task, plain ones included
    assert flow.parameters() == {n, m}
