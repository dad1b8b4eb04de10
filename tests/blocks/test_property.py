"""Random loop blocks against a reference interpreter.

A block body is a small random DAG of arithmetic tasks. Each task adds up its
inputs — the carried value, the iteration index, values from outside the
block, earlier tasks of the body — with fixed coefficients; some loop on
their own, some fail on planned attempts of planned iterations, and the body
may hold a nested block. The reference below runs the same description with
plain ``for`` loops, written from the rules of loop blocks alone, and the
engine must agree with it on the block's final state, its value, its number
of iterations and every carried value along the way — inline on the
LocalExecutor and through a machine per iteration on threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.core.state import Kind
from iterflow.events import TaskRunEvent
from iterflow.executors import LocalExecutor, ThreadExecutor
from iterflow.runtime import run_flow
from tests.blocks.conftest import BlockSink

M = 1_000_003
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the description ------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """A body task: ``(const + sum(coef * input)) % M``, looped ``loops`` more times.

    Inputs name a source: ``"carried"``, ``"index"``, ``"out0"``/``"out1"``
    (tasks outside the block) or ``i`` (the ``i``-th node before it). With
    ``fail=(k, n)`` its first ``n`` attempts at iteration ``k`` raise. With
    ``inner=m`` it is a nested block of ``m`` iterations instead, adding its
    input sum to a carried total each time.
    """

    const: int
    inputs: tuple[tuple[object, int], ...]
    loops: int = 0
    fail: tuple[int, int] | None = None
    inner: int = 0


@dataclass(frozen=True)
class BlockSpec:
    initial: int
    outside: tuple[int, int]
    nodes: tuple[Node, ...]
    result: int          # which node's value is carried on
    stop_every: int      # until: index >= stop_at - 1, or value % stop_every == 0
    stop_at: int
    max_loops: int
    max_retries: int


@st.composite
def block_specs(draw) -> BlockSpec:
    count = draw(st.integers(1, 5))
    nodes = []
    for i in range(count):
        sources = ["carried", "index", "out0", "out1", *range(i)]
        picked = draw(st.lists(st.sampled_from(sources), min_size=1, max_size=3, unique=True))
        inputs = tuple((s, draw(st.integers(1, 9))) for s in picked)
        fail = None
        if draw(st.integers(0, 4)) == 0:
            fail = (draw(st.integers(0, 6)), draw(st.integers(1, 2)))
        kind = draw(st.sampled_from(["plain", "plain", "plain", "looping", "inner"]))
        nodes.append(Node(
            const=draw(st.integers(0, 50)),
            inputs=inputs,
            loops=draw(st.integers(1, 3)) if kind == "looping" else 0,
            fail=fail if kind != "inner" else None,
            inner=draw(st.integers(1, 3)) if kind == "inner" else 0,
        ))
    return BlockSpec(
        initial=draw(st.integers(0, 100)),
        outside=(draw(st.integers(0, 100)), draw(st.integers(0, 100))),
        nodes=tuple(nodes),
        result=draw(st.integers(0, count - 1)),
        stop_every=draw(st.integers(5, 97)),
        stop_at=draw(st.integers(2, 8)),
        max_loops=draw(st.integers(2, 10)),
        max_retries=draw(st.integers(0, 2)),
    )


def stops(index: int, value: int, spec: BlockSpec) -> bool:
    return index >= spec.stop_at - 1 or value % spec.stop_every == 0


# -- the reference ------------------------------------------------------------------------
def reference(spec: BlockSpec) -> tuple[str, int | None, int, list[int]]:
    """``(final state kind, value, loop_count, carried values recorded by Looped)``."""
    carried, looped = spec.initial, []
    for k in range(spec.max_loops):
        for attempt in range(1, spec.max_retries + 2):
            values: list[int] = []
            failed = False
            for node in spec.nodes:
                if node.fail is not None and node.fail[0] == k and attempt <= node.fail[1]:
                    failed = True
                    break
                total = node.const + sum(
                    coef * source_value(source, carried, k, spec, values)
                    for source, coef in node.inputs
                )
                if node.inner:
                    inner = 0
                    for _ in range(node.inner):
                        inner = (inner + total) % M
                    values.append(inner)
                else:
                    values.append(total * (node.loops + 1) % M)
            if not failed:
                break
        else:
            return "Failed", None, k + 1, looped
        value = values[spec.result]
        if stops(k, value, spec):
            return "Success", value, k + 1, looped
        if k + 1 >= spec.max_loops:
            return "Failed", None, k + 1, looped
        looped.append(value)
        carried = value
    raise AssertionError("unreachable")


def source_value(source, carried, index, spec, values):
    if source == "carried":
        return carried
    if source == "index":
        return index
    if source in ("out0", "out1"):
        return spec.outside[int(source[-1])]
    return values[source]


# -- the engine side ----------------------------------------------------------------------
def node_task(node: Node, name: str):
    @task(name=name)
    def work(**inputs):
        ctx = iterflow.context
        planned = node.fail is not None and ctx.block_index == node.fail[0]
        if planned and ctx.block_run_count <= node.fail[1]:
            raise ValueError(f"{name}: planned failure")
        coefs = [coef for _, coef in node.inputs]
        total = node.const + sum(c * inputs[f"a{j}"] for j, c in enumerate(coefs))
        if node.loops:
            acc = ctx.get("loop_result", 0) + total
            if ctx.loop_index < node.loops:
                raise LOOP(result=acc)
            return acc % M
        return total % M

    return work


@task
def constant(value):
    return value


@task
def add_mod(total, step):
    return (total + step) % M


@task
def inner_done(i, m):
    return i >= m - 1


@task
def sum_inputs(const, **inputs):
    return const + sum(inputs.values())


def build(spec: BlockSpec):
    with Flow("random block") as flow:
        outside = [constant(v) for v in spec.outside]
        options = {"max_loops": spec.max_loops, "max_retries": spec.max_retries}
        with loop(initial=spec.initial, name="body", **options) as it:
            made = []
            for i, node in enumerate(spec.nodes):
                sources = {"carried": it.result, "index": it.index,
                           "out0": outside[0], "out1": outside[1]}
                args = [sources[s] if isinstance(s, str) else made[s] for s, _ in node.inputs]
                if node.inner:
                    made.append(inner_block(node, args, f"inner{i}"))
                else:
                    work = node_task(node, f"n{i}")
                    made.append(work(**{f"a{j}": a for j, a in enumerate(args)}))
            value = made[spec.result]
            it.next(result=value, until=stop(it.index, value, spec.stop_at, spec.stop_every))
    return flow, it


def inner_block(node: Node, args: list, name: str):
    """A nested block adding the node's input sum to its carried total, ``node.inner`` times."""
    with loop(initial=0, name=name) as inner:
        scaled = [scale(a, coef) for a, (_, coef) in zip(args, node.inputs)]
        total = sum_inputs(node.const, **{f"s{j}": s for j, s in enumerate(scaled)})
        step = add_mod(inner.result, total)
        inner.next(result=step, until=inner_done(inner.index, node.inner))
    return inner.final


@task
def scale(x, c):
    return c * x


@task
def stop(i, value, stop_at, stop_every):
    return i >= stop_at - 1 or value % stop_every == 0


def check(spec: BlockSpec, executor, observe: bool = True) -> None:
    flow, it = build(spec)
    sink = BlockSink()
    state = run_flow(flow, store=None, executor=executor, sinks=[sink])
    sink.assert_ok()
    kind, value, loop_count, looped = reference(spec)
    if observe:  # shown by --hypothesis-show-statistics
        event(f"block {kind}, {min(loop_count, 3)}{'+' if loop_count >= 3 else ''} iteration(s)")
        for feature in ("loops", "fail", "inner"):
            if any(getattr(node, feature) for node in spec.nodes):
                event(f"a node with {feature}")
    block = state.result[it.final]
    assert (block.name, block.loop_count) == (kind, loop_count), (block, block.message)
    if kind == "Success":
        assert block.result == value
    recorded = [
        e.state.result for e in sink.events
        if isinstance(e, TaskRunEvent) and e.task_slug == "body" and e.state.kind is Kind.LOOPED
    ]
    assert recorded == looped
    assert state.is_successful() == (kind == "Success")


@PROPERTY
@given(block_specs())
def test_random_blocks_match_the_reference_inline(spec):
    check(spec, LocalExecutor(), observe=False)


@PROPERTY
@given(block_specs())
def test_random_blocks_match_the_reference_on_threads(spec):
    check(spec, ThreadExecutor(max_workers=4))


def test_the_reference_itself():
    spec = BlockSpec(
        initial=1, outside=(10, 20),
        nodes=(
            Node(const=0, inputs=(("carried", 2),)),
            Node(const=1, inputs=((0, 1), ("out1", 1))),
        ),
        result=1, stop_every=1000, stop_at=3, max_loops=5, max_retries=0,
    )
    # carried 1 -> n0 = 2, n1 = 23 -> n0 = 46, n1 = 67 -> n0 = 134, n1 = 155
    assert reference(spec) == ("Success", 155, 3, [23, 67])
    check(spec, LocalExecutor(), observe=False)
