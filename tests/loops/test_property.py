"""Random looping DAGs against a reference interpreter.

The engine runs a random flow (see :func:`tests.strategies.dag_specs`); a
plain recursive evaluator, written from DESIGN §3 and §7 alone, computes what
every task's final state should be; the two must agree on each task's state
kind, result and ``loop_count`` — for mapped tasks, child by child — and on
the flow's state. The reference knows nothing of the engine: no machine, no
executor, no context. It loops with a ``for`` over iterations and decides
retries by comparing planned failures with ``max_retries``.

The same flows run with a random mix of plain and ``async def`` tasks: the
two loop drivers must agree with the one reference.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import Flow, case, task, triggers, unmapped
from iterflow.core.helpers import Constant
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runtime import run_flow
from iterflow.signals import LOOP, SKIP
from iterflow.tasks.control_flow import CompareValue
from tests.conftest import InvariantSink
from tests.strategies import DagSpec, NodeSpec, dag_specs

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- what every task computes (shared by the engine's tasks and the reference) ---
def num(value: Any) -> int:
    """A task's view of an input: ints count, lists add up, anything else is 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list):
        return sum(num(v) for v in value)
    return 0


def mix(acc: int, iteration: int, index: int) -> int:
    return (acc * 31 + iteration + 7 * index) % 1_000_003


# -- the engine side ------------------------------------------------------------
def make_function(node: NodeSpec, attempts: collections.Counter):
    """The task's function; ``attempts`` counts calls per (task run, iteration) on our side."""

    def work(**inputs: Any) -> int:
        ctx = iterflow.context
        i = ctx.loop_index
        loops, failures, skip_at = node.plan(ctx.map_index)
        attempts[ctx.task_run_id, i] += 1
        attempt = attempts[ctx.task_run_id, i]
        if ctx.task_run_count != attempt:
            raise AssertionError(f"task_run_count {ctx.task_run_count}, attempt {attempt}")
        if ("loop_result" in ctx) != (i > 0):
            raise AssertionError(f"loop_result present={'loop_result' in ctx} at iteration {i}")
        acc = ctx.loop_result if i > 0 else sum(num(v) for v in inputs.values())
        if attempt <= failures.get(i, 0):
            raise ValueError(f"planned failure at iteration {i}, attempt {attempt}")
        if skip_at == i:
            raise SKIP(f"planned skip at iteration {i}")
        acc = mix(acc, i, node.index)
        if i < loops:
            raise LOOP(result=acc)
        return acc % 2 if node.parity else acc

    return work


def make_async_function(node: NodeSpec, attempts: collections.Counter):
    """The same work as an ``async def``, suspending on the loop before and after it."""
    work = make_function(node, attempts)

    async def awork(**inputs: Any) -> int:
        await asyncio.sleep(0)
        value = work(**inputs)
        await asyncio.sleep(0)
        return value

    return awork


TRIGGERS = {name: getattr(triggers, name) for name in
            ("all_successful", "all_failed", "any_successful", "any_failed", "all_finished")}


def build(spec: DagSpec, async_nodes: int = 0):
    """The flow for ``spec``; returns it with ``{key: task}`` for every node, gate and constant.

    Node ``i`` is an ``async def`` task when bit ``i`` of ``async_nodes`` is set.
    """
    tasks: dict[tuple[str, int], Any] = {}
    attempts: collections.Counter = collections.Counter()
    with Flow("property") as flow:
        for node in spec.nodes:
            make = make_async_function if async_nodes >> node.index & 1 else make_function
            work = task(
                make(node, attempts),
                name=f"n{node.index}",
                max_retries=node.max_retries,
                max_loops=20,  # far above any plan: a broken engine fails fast
                trigger=TRIGGERS[node.trigger],
                skip_on_upstream_skip=node.skip_on_upstream_skip,
            )
            inputs = {f"u{j}": tasks[("work", j)] for j in node.upstream}
            block = (
                case(tasks[("work", node.case[0])], node.case[1])
                if node.case is not None
                else contextlib.nullcontext()
            )
            with block:
                if node.items is not None:
                    made = work.map(
                        item=list(node.items), **{k: unmapped(v) for k, v in inputs.items()}
                    )
                elif node.mapped_upstream is not None:
                    made = work.map(
                        item=tasks[("work", node.mapped_upstream)],
                        **{k: unmapped(v) for k, v in inputs.items()},
                    )
                else:
                    made = work(**inputs)
            tasks[("work", node.index)] = made
            for up in flow.upstream_tasks(made):
                if isinstance(up, CompareValue):
                    tasks[("gate", node.index)] = up
                elif isinstance(up, Constant):
                    tasks[("const", node.index)] = up
    return flow, tasks


# -- the reference interpreter -----------------------------------------------------
@dataclass
class Ref:
    """An expected final state: ``kind`` name, ``result``, ``loop_count``, children."""

    kind: str
    result: Any = None
    loop_count: int | None = None
    children: list[Ref] = field(default_factory=list)


def ok(state: Ref) -> bool:
    if state.kind == "Mapped":
        return all(ok(c) for c in state.children)
    return state.kind in ("Success", "Skipped")


def failed(state: Ref) -> bool:
    if state.kind == "Mapped":
        return any(failed(c) for c in state.children)
    return state.kind in ("Failed", "TriggerFailed")


REFERENCE_TRIGGERS = {
    "all_successful": lambda ups: all(ok(s) for s in ups),
    "all_failed": lambda ups: all(failed(s) for s in ups),
    "any_successful": lambda ups: not ups or any(ok(s) for s in ups),
    "any_failed": lambda ups: not ups or any(failed(s) for s in ups),
    "all_finished": lambda ups: True,
}


def value_of(state: Ref) -> Any:
    if state.kind == "Mapped":
        return [value_of(c) for c in state.children]
    return state.result


def gate(trigger: str, skip_on_upstream_skip: bool, upstream: list[Ref]) -> Ref | None:
    """Skipped or TriggerFailed (a task that never ran), or None: it runs."""
    if skip_on_upstream_skip and any(s.kind == "Skipped" for s in upstream):
        return Ref("Skipped", loop_count=0)
    if not REFERENCE_TRIGGERS[trigger](upstream):
        return Ref("TriggerFailed", loop_count=0)
    return None


def run_node(node: NodeSpec, inputs: list[Any], map_index: int | None = None) -> Ref:
    loops, failures, skip_at = node.plan(map_index)
    acc = sum(num(v) for v in inputs)
    for i in range(loops + 1):
        if failures.get(i, 0) > node.max_retries:
            return Ref("Failed", None, i + 1)
        if skip_at == i:
            return Ref("Skipped", None, i + 1)
        acc = mix(acc, i, node.index)
    return Ref("Success", acc % 2 if node.parity else acc, loops + 1)


def reference(spec: DagSpec) -> dict[tuple[str, int], Ref]:
    nodes = {n.index: n for n in spec.nodes}
    memo: dict[tuple[str, int], Ref] = {}

    def state(key: tuple[str, int]) -> Ref:
        if key not in memo:
            memo[key] = compute(*key)
        return memo[key]

    def compute(kind: str, index: int) -> Ref:
        node = nodes[index]
        if kind == "gate":
            condition = state(("work", node.case[0]))
            verdict = gate("all_successful", True, [condition])
            if verdict is not None:
                return verdict
            if condition.result == node.case[1]:
                return Ref("Success", True, 1)
            return Ref("Skipped", None, 1)
        guard = [state(("gate", index))] if node.case is not None else []
        if kind == "const":
            return gate("all_successful", True, guard) or Ref("Success", list(node.items), 1)
        data = [state(("work", j)) for j in node.upstream]
        if not node.is_mapped:
            return gate(node.trigger, node.skip_on_upstream_skip, guard + data) or run_node(
                node, [value_of(s) for s in data]
            )
        source = state(("const", index)) if node.items is not None else state(
            ("work", node.mapped_upstream)
        )
        element_wise = source.kind == "Mapped"
        shared = guard + data + ([] if element_wise else [source])
        verdict = gate(node.trigger, node.skip_on_upstream_skip, shared)
        if verdict is not None:
            return verdict
        if element_wise:
            elements = list(zip(source.children, value_of(source), strict=True))
        elif isinstance(source.result, list):
            elements = [(None, item) for item in source.result]
        else:
            return Ref("Failed", None, 0)  # mapping over a value that is not a list
        children = []
        for map_index, (child_source, item) in enumerate(elements):
            upstream = shared + ([child_source] if child_source is not None else [])
            verdict = gate(node.trigger, node.skip_on_upstream_skip, upstream)
            children.append(
                verdict or run_node(node, [value_of(s) for s in data] + [item], map_index)
            )
        return Ref("Mapped", children=children)

    for node in spec.nodes:
        state(("work", node.index))
        if node.case is not None:
            state(("gate", node.index))
        if node.items is not None:
            state(("const", node.index))
    return memo


# -- comparing ------------------------------------------------------------------
def normalise(value: Any) -> Any:
    if isinstance(value, BaseException):
        return None  # a failed task's result is its exception; the reference says None
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def describe(state) -> Ref:
    if state.is_mapped():
        return Ref("Mapped", children=[describe(c) for c in state.map_states])
    return Ref(state.name, normalise(state.result), state.loop_count)


def check_against_reference(spec: DagSpec, executor, async_nodes: int = 0) -> None:
    flow, tasks = build(spec, async_nodes)
    sink = InvariantSink()
    flow_state = run_flow(flow, store=None, executor=executor, sinks=[sink])
    sink.assert_ok(flow_state, flow)
    expected = reference(spec)
    assert set(expected) == set(tasks)
    for key, want in sorted(expected.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        got = describe(flow_state.result[tasks[key]])
        assert got == want, f"{key}: engine {got} != reference {want}\nspec: {spec}"
    used = {u for n in spec.nodes for u in n.all_upstream()}
    used |= {n.case[0] for n in spec.nodes if n.case is not None}
    terminal = [expected[("work", n.index)] for n in spec.nodes if n.index not in used]
    assert flow_state.is_successful() == all(ok(s) for s in terminal)


@PROPERTY
@given(dag_specs())
def test_random_looping_dags_match_the_reference(spec):
    check_against_reference(spec, LocalExecutor())


@settings(PROPERTY, max_examples=15)
@given(dag_specs(max_tasks=8))
def test_random_looping_dags_match_the_reference_on_threads(spec):
    check_against_reference(spec, ThreadExecutor(max_workers=3))


@settings(PROPERTY, max_examples=30)
@given(dag_specs(), st.integers(min_value=0, max_value=2**16 - 1))
def test_random_mixes_of_sync_and_async_tasks_match_the_reference(spec, async_nodes):
    check_against_reference(spec, LocalExecutor(), async_nodes)


@settings(PROPERTY, max_examples=10)
@given(dag_specs(max_tasks=8), st.integers(min_value=0, max_value=2**8 - 1))
def test_random_mixes_of_sync_and_async_tasks_match_the_reference_on_threads(
    spec, async_nodes
):
    check_against_reference(spec, ThreadExecutor(max_workers=3), async_nodes)


class LeanRecorder:
    """Keeps every task run's events, as a sink the store's peers are (``implied_running``)."""

    implied_running = True

    def __init__(self) -> None:
        self.events: dict[str, list[Any]] = collections.defaultdict(list)

    def handle(self, event: Any) -> None:
        if type(event).__name__ == "TaskRunEvent":
            self.events[event.task_run_id].append(event)


@settings(PROPERTY, max_examples=15)
@given(dag_specs(max_tasks=8), st.sampled_from([0, 0, 2**8 - 1, 0b1010_1010]))
def test_random_looping_dags_are_recorded_as_they_ran(tmp_path_factory, spec, async_nodes):
    """With the store on (and the Running a Looped implies left out), each task run's
    recorded history is exactly its states as they happened, values included — for
    plain tasks, async ones (all of them, or every other) alike."""
    from iterflow.store import iterations, load_result, task_runs

    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    flow, tasks = build(spec, async_nodes)
    recorder = LeanRecorder()
    flow_state = run_flow(flow, store=url, sinks=[recorder])
    expected = reference(spec)
    for key, want in expected.items():
        assert describe(flow_state.result[tasks[key]]) == want, key
    for info in task_runs(flow_state.run_id, store=url):
        seen = [e for e in recorder.events[info.task_run_id] if e.state.name != "Pending"]
        final = seen[-1].state
        assert (info.state, info.loop_count) == (final.name, final.loop_count), info
        if final.name == "Mapped":
            continue
        history = iterations(flow_state.run_id, info.task_slug, info.map_index, store=url)
        assert [(h.state, h.loop_index) for h in history] == [
            (e.state.name, e.loop_index) for e in seen if e.state.name != "Running"
        ]
        for h, e in zip(history, [e for e in seen if e.state.name != "Running"], strict=True):
            if h.state in ("Looped", "Success") and h.result_id is not None:
                assert load_result(h.result_id, store=url) == e.state.result


def test_the_reference_itself_on_a_hand_written_flow():
    """The reference agrees with hand-worked values, so it is not trivially the engine."""
    a = NodeSpec(0, (), 2, ((1, 1),), 1, None, "all_successful", True, False, None, None, None)
    b = NodeSpec(1, (0,), 0, ((0, 2),), 1, None, "all_successful", True, False, None, None, None)
    c = NodeSpec(2, (1,), 0, (), 0, None, "any_failed", True, False, (1, 2), None, None)
    expected = reference(DagSpec((a, b, c)))
    acc = 0
    for i in range(3):
        acc = mix(acc, i, 0)
    assert expected[("work", 0)] == Ref("Success", acc, 3)
    assert expected[("work", 1)] == Ref("Failed", None, 1)
    mapped = expected[("work", 2)]
    assert [child.kind for child in mapped.children] == ["Success", "Success"]
    assert [child.result for child in mapped.children] == [mix(1, 0, 2), mix(2, 0, 2)]
    check_against_reference(DagSpec((a, b, c)), LocalExecutor())
