"""FlowMachine with plain values: events in, instructions out, no threads, no I/O."""

from __future__ import annotations

import pytest

from iterflow import Flow, flatten, task, triggers, unmapped
from iterflow.engine.machine import NOTHING, Finished, FlowMachine, RunTask, check_transition
from iterflow.errors import InvalidTransition
from iterflow.states import (
    Failed,
    Looped,
    Mapped,
    Pending,
    Running,
    Skipped,
    Success,
    TriggerFailed,
)


@task
def src():
    return 1


@task
def inc(x):
    return x + 1


@task
def add(x, y):
    return x + y


def kinds(instructions):
    return [
        (type(i).__name__, i.task.slug, i.map_index, getattr(i, "state", None) and i.state.name)
        for i in instructions
    ]


def test_a_chain_runs_one_task_after_another_with_upstream_results_as_inputs():
    with Flow("chain") as flow:
        a = src()
        b = inc(a)
        c = add(b, y=10)
    machine = FlowMachine(flow)
    assert machine.start() == [RunTask(a, None, {})]
    assert machine.task_run_finished(a, None, Success(result=1)) == [RunTask(b, None, {"x": 1})]
    assert machine.task_run_finished(b, None, Success(result=2)) == [
        RunTask(c, None, {"x": 2, "y": 10})
    ]
    assert not machine.done
    assert machine.unfinished() == [c]
    assert machine.task_run_finished(c, None, Success(result=12)) == []
    assert machine.done
    assert machine.flow_state().is_successful()


def test_independent_roots_are_all_ready_at_start_in_flow_order():
    with Flow("roots") as flow:
        roots = [src() for _ in range(3)]
        add(roots[0], roots[2])
    assert [i.task for i in FlowMachine(flow).start()] == roots


def test_a_task_waits_for_every_upstream():
    with Flow("join") as flow:
        a, b = src(), src()
        c = add(a, b)
    machine = FlowMachine(flow)
    machine.start()
    assert machine.task_run_finished(a, None, Success(result=1)) == []
    assert machine.task_run_finished(b, None, Success(result=5)) == [
        RunTask(c, None, {"x": 1, "y": 5})
    ]


def test_a_skip_propagates_down_a_chain_in_one_answer():
    with Flow("skips") as flow:
        a = src()
        b = inc(a)
        c = inc(b)
        d = inc.copy(skip_on_upstream_skip=False)
        flow.add_edge(c, d, key="x")
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Skipped("no"))
    assert kinds(out) == [
        ("Finished", "inc", None, "Skipped"),
        ("Finished", "inc-2", None, "Skipped"),
        ("RunTask", "inc-3", None, None),
    ]
    assert "upstream task skipped: src" in out[0].state.message
    assert out[0].state.loop_count == 0
    assert out[2].inputs == {"x": None}


def test_a_long_chain_of_skips_does_not_recurse():
    with Flow("long") as flow:
        t = src()
        first = t
        for _ in range(3000):
            t = inc(t)
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(first, None, Skipped())
    assert len(out) == 3000 and machine.done


def test_a_trigger_not_met_gives_trigger_failed_naming_the_upstream_states():
    with Flow("trigger") as flow:
        a, b = src(), src()
        c = add(a, b)
    machine = FlowMachine(flow)
    machine.start()
    machine.task_run_finished(a, None, Success(result=1))
    (out,) = machine.task_run_finished(b, None, Failed("boom"))
    assert out.task is c
    assert isinstance(out, Finished) and isinstance(out.state, TriggerFailed)
    assert "all_successful" in out.state.message
    assert "'add'" in out.state.message
    assert "src-2: Failed" in out.state.message
    assert "src:" not in out.state.message  # only the states that failed it
    assert machine.flow_state().is_failed()
    assert "add (TriggerFailed)" in machine.flow_state().message


def test_a_trigger_that_raises_gives_trigger_failed():
    def broken(upstream):
        raise KeyError("oops")

    with Flow("broken trigger") as flow:
        a = src()
        b = inc.copy(trigger=broken)(a)
    machine = FlowMachine(flow)
    machine.start()
    (out,) = machine.task_run_finished(a, None, Success(result=1))
    assert isinstance(out.state, TriggerFailed)
    assert "broken raised KeyError" in out.state.message
    assert out.task is b


def test_a_skip_wins_over_the_trigger_unless_skip_on_upstream_skip_is_false():
    with Flow("skip and trigger") as flow:
        a = src()
        b = inc.copy(trigger=triggers.all_failed)(a)
        c = inc.copy(trigger=triggers.all_failed, skip_on_upstream_skip=False)(a)
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Skipped())
    states = {i.task: i.state for i in out}
    assert states[b].is_skipped()
    # For triggers a skipped upstream counts as successful, so all_failed is not met.
    assert isinstance(states[c], TriggerFailed)


def test_a_mapped_task_expands_into_children():
    with Flow("map") as flow:
        a = src()
        m = add.map(a, y=unmapped(100))
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Success(result=[1, 2, 3]))
    assert out == [
        RunTask(m, 0, {"x": 1, "y": 100}),
        RunTask(m, 1, {"x": 2, "y": 100}),
        RunTask(m, 2, {"x": 3, "y": 100}),
    ]
    assert machine.task_run_finished(m, 2, Success(result=103)) == []
    assert machine.task_run_finished(m, 0, Success(result=101)) == []
    (parent,) = machine.task_run_finished(m, 1, Success(result=102))
    assert isinstance(parent, Finished) and parent.map_index is None
    assert isinstance(parent.state, Mapped)
    assert parent.state.result == [101, 102, 103]  # in map_index order, not finishing order
    assert machine.done


def test_mapping_over_an_empty_list_finishes_the_parent_at_once_and_reduce_gets_empty():
    with Flow("empty") as flow:
        a = src()
        m = inc.map(a)
        total = task(lambda xs: sum(xs), name="total")(m)
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Success(result=[]))
    assert kinds(out) == [("Finished", "inc", None, "Mapped"), ("RunTask", "total", None, None)]
    assert out[0].task is m and out[1].task is total
    assert out[0].state.result == [] and out[0].state.map_states == []
    assert out[1].inputs == {"xs": []}


def test_mapping_over_a_mapped_task_is_element_wise_and_a_failed_child_fails_only_its_match():
    with Flow("element-wise") as flow:
        a = src()
        first = inc.map(a)
        second = inc.map(first)
    machine = FlowMachine(flow)
    machine.start()
    machine.task_run_finished(a, None, Success(result=[1, 2, 3]))
    machine.task_run_finished(first, 0, Success(result=2))
    machine.task_run_finished(first, 1, Failed("boom"))
    out = machine.task_run_finished(first, 2, Success(result=4))
    assert kinds(out) == [
        ("Finished", "inc", None, "Mapped"),
        ("RunTask", "inc-2", 0, None),
        ("Finished", "inc-2", 1, "TriggerFailed"),
        ("RunTask", "inc-2", 2, None),
    ]
    assert out[1].inputs == {"x": 2} and out[3].inputs == {"x": 4}
    assert out[1].task is second
    assert "inc: Failed" in out[2].state.message


def test_a_failed_shared_upstream_fails_the_mapped_parent_without_children():
    with Flow("shared") as flow:
        a, b = src(), src()
        m = add.map(a, unmapped(b))
    machine = FlowMachine(flow)
    machine.start()
    machine.task_run_finished(a, None, Success(result=[1, 2]))
    (out,) = machine.task_run_finished(b, None, Failed("no"))
    assert out.task is m and out.map_index is None and isinstance(out.state, TriggerFailed)


def test_zip_takes_the_shortest_and_flatten_maps_over_a_list_of_lists():
    with Flow("zip") as flow:
        a, b = src(), src()
        z = add.map(a, b)
        f = inc.map(flatten(a))
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Success(result=[[1], [2, 3]]))
    assert [i.inputs for i in out if i.task is f] == [{"x": 1}, {"x": 2}, {"x": 3}]
    out = machine.task_run_finished(b, None, Success(result=["x", "y", "z"]))
    assert [i.inputs for i in out] == [{"x": [1], "y": "x"}, {"x": [2, 3], "y": "y"}]
    assert all(i.task is z for i in out)


def test_mapping_over_something_not_iterable_fails_the_task_with_a_clear_message():
    with Flow("not iterable") as flow:
        a = src()
        m = inc.map(a)
        s = inc.map(a)
    machine = FlowMachine(flow)
    machine.start()
    out = machine.task_run_finished(a, None, Success(result=42))
    assert [type(i.state) for i in out] == [Failed, Failed]
    assert "maps over argument 'x'" in out[0].state.message
    assert "int" in out[0].state.message and "unmapped" in out[0].state.message
    assert out[0].task is m and out[1].task is s


def test_a_string_is_not_mapped_character_by_character():
    with Flow("string") as flow:
        a = src()
        inc.map(a)
    machine = FlowMachine(flow)
    machine.start()
    (out,) = machine.task_run_finished(a, None, Success(result="abc"))
    assert out.state.is_failed() and "by character" in out.state.message


def test_resume_keeps_finished_states_and_continues_loops():
    with Flow("resume") as flow:
        a = src()
        b = inc(a)
        c = inc.map(b)
    machine = FlowMachine(
        flow,
        resume_finished={("src", None): Success(result=1), ("inc-2", 0): Success(result=9)},
        resume_loops={("inc", None): (4, "partial"), ("inc-2", 1): (2, None)},
    )
    first, run_b = machine.start()
    assert isinstance(first, Finished) and first.resumed and first.task is a
    # src finished in the run being resumed; inc continues at iteration 4 with its loop_result
    assert run_b.task is b and (run_b.start_loop_index, run_b.loop_result) == (4, "partial")
    out = machine.task_run_finished(b, None, Success(result=[5, 6]))
    assert kinds(out) == [("Finished", "inc-2", 0, "Success"), ("RunTask", "inc-2", 1, None)]
    assert out[0].resumed and out[0].task is c
    assert (out[1].start_loop_index, out[1].loop_result) == (2, None)


def test_a_task_that_receives_states_gets_upstream_states():
    from iterflow.tasks.control_flow import Merge

    with Flow("states in") as flow:
        a = src()
        m = Merge()(branch_1=a)
    machine = FlowMachine(flow)
    machine.start()
    upstream = Skipped()
    (out,) = machine.task_run_finished(a, None, upstream)
    assert out.task is m and out.inputs == {"branch_1": upstream}


def test_runtask_defaults_mean_start_at_iteration_zero_with_no_loop_result():
    instr = RunTask(src, None, {})
    assert instr.start_loop_index == 0 and instr.loop_result is NOTHING
    assert repr(NOTHING) == "NOTHING"


def test_flow_state_counts_only_terminal_tasks():
    with Flow("terminal") as flow:
        a = src()
        b = inc.copy(trigger=triggers.always_run)(a)
    machine = FlowMachine(flow)
    machine.start()
    machine.task_run_finished(a, None, Failed("upstream broke"))
    # b is not ready through a trigger decision: it runs (always_run)
    machine.task_run_finished(b, None, Skipped())
    assert machine.flow_state().is_successful()  # a skipped terminal task is fine


@pytest.mark.parametrize(
    "old, new, legal",
    [
        (Pending(), Running(), True),
        (Running(), Looped(loop_index=0), True),
        (Looped(), Running(loop_index=1), True),
        (Running(), Success(), True),
        (Pending(), Mapped(), True),
        (Pending(), Looped(), False),
        (Success(), Running(), False),
        (Running(), Pending(), False),
        (Failed(), Success(), False),
    ],
)
def test_check_transition(old, new, legal):
    if legal:
        check_transition(old, new, "t")
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(old, new, "t", history=[Pending()])
        assert f"cannot move from {old.name} to {new.name}" in str(info.value)
        assert "'t'" in str(info.value)
        assert [s.name for s in info.value.history] == ["Pending", old.name]
