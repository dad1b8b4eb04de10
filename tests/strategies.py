"""Hypothesis strategies shared by the suite.

- :func:`states`: any task or flow :class:`~iterflow.core.state.State`, with
  the fields its kind carries.
- :func:`dag_specs`: a random flow described as plain data (:class:`DagSpec`):
  5 to 12 looping tasks with planned failures, retries, skips, random triggers,
  some mapped over a constant list or element-wise over a mapped upstream,
  some inside a ``case`` block. ``tests/loops/test_property.py`` builds the
  flow from it and checks the engine against a reference interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from iterflow.core import state as states_module

__all__ = ["TRIGGER_NAMES", "DagSpec", "NodeSpec", "dag_specs", "states"]

TRIGGER_NAMES = ("all_successful", "all_failed", "any_successful", "any_failed", "all_finished")

_plain_values = st.one_of(
    st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=4)
)
_messages = st.none() | st.text(max_size=20)
_loop_counts = st.none() | st.integers(min_value=0, max_value=10_000)


@st.composite
def states(draw, kinds=None):
    """A state of any kind (or of one of ``kinds``), with random fields."""
    kind = draw(st.sampled_from(list(kinds or states_module.Kind)))
    cls = states_module.state_class(kind)
    kwargs = {
        "message": draw(_messages),
        "loop_count": draw(_loop_counts),
        "timestamp": draw(st.floats(min_value=0, max_value=2e9)),
    }
    if kind is states_module.Kind.MAPPED:
        children = draw(st.lists(states(kinds=[states_module.Kind.SUCCESS]), max_size=3))
        return cls(map_states=children, **kwargs)
    kwargs["result"] = draw(_plain_values)
    if kind in (states_module.Kind.RUNNING, states_module.Kind.LOOPED):
        kwargs["loop_index"] = draw(st.integers(min_value=0, max_value=10_000))
    if kind is states_module.Kind.RETRYING:
        kwargs["loop_index"] = draw(st.integers(min_value=0, max_value=100))
        kwargs["run_count"] = draw(st.integers(min_value=1, max_value=5))
    if kind is states_module.Kind.FAILED:
        kwargs["traceback"] = draw(st.none() | st.text(max_size=30))
    return cls(**kwargs)


@dataclass(frozen=True)
class NodeSpec:
    """One task of a random flow.

    Its function raises ``LOOP`` on iterations ``0..loops-1`` and returns on
    iteration ``loops``. At iteration ``i`` its first ``failures[i]`` attempts
    raise ``ValueError``; at iteration ``skip_at`` it raises ``SKIP``. Its
    inputs are the results of ``upstream`` (passed whole), plus ``item`` when
    it maps over ``items`` (a constant list) or over ``mapped_upstream``
    (element-wise). With ``case=(c, v)`` it sits in ``with case(task c, v):``.
    A ``parity`` task returns its value modulo 2 (a case condition). With
    ``vary_children``, a mapped child with an odd ``map_index`` neither fails
    nor skips and loops once more, so children of one task end differently.
    """

    index: int
    upstream: tuple[int, ...]
    loops: int
    failures: tuple[tuple[int, int], ...]
    max_retries: int
    skip_at: int | None
    trigger: str
    skip_on_upstream_skip: bool
    parity: bool
    items: tuple[int, ...] | None
    mapped_upstream: int | None
    case: tuple[int, int] | None
    vary_children: bool = False

    @property
    def is_mapped(self) -> bool:
        return self.items is not None or self.mapped_upstream is not None

    def plan(self, map_index: int | None) -> tuple[int, dict[int, int], int | None]:
        """``(loops, {iteration: failing attempts}, skip_at)`` for one task run."""
        if self.vary_children and map_index is not None and map_index % 2:
            return self.loops + 1, {}, None
        return self.loops, dict(self.failures), self.skip_at

    def all_upstream(self) -> tuple[int, ...]:
        extra = () if self.mapped_upstream is None else (self.mapped_upstream,)
        return self.upstream + extra


@dataclass(frozen=True)
class DagSpec:
    """A random flow: nodes in an order where every upstream comes first."""

    nodes: tuple[NodeSpec, ...]


@st.composite
def node_specs(draw, index: int, earlier: tuple[NodeSpec, ...]) -> NodeSpec:
    loops = draw(st.integers(min_value=0, max_value=4))
    failures = (
        draw(
            st.dictionaries(
                st.integers(min_value=0, max_value=loops), st.integers(min_value=1, max_value=2),
                min_size=1, max_size=2,
            )
        )
        if draw(st.integers(0, 2)) == 0
        else {}
    )
    skip_at = None
    if draw(st.integers(0, 5)) == 0:
        skip_at = draw(st.integers(min_value=0, max_value=loops))
    upstream = (
        draw(st.lists(st.integers(min_value=0, max_value=index - 1), unique=True, max_size=3))
        if index
        else []
    )
    mapped_earlier = [n.index for n in earlier if n.is_mapped]
    modes = ["plain", "plain", "items"] + (["upstream"] if mapped_earlier else [])
    mode = draw(st.sampled_from(modes))
    items = None
    mapped_upstream = None
    if mode == "items":
        items = tuple(draw(st.lists(st.integers(min_value=0, max_value=9), max_size=4)))
    elif mode == "upstream":
        mapped_upstream = draw(st.sampled_from(mapped_earlier))
        upstream = [u for u in upstream if u != mapped_upstream]
    conditions = [n.index for n in earlier if n.parity and not n.is_mapped]
    case = None
    if conditions and draw(st.integers(0, 2)) == 0:
        case = (draw(st.sampled_from(conditions)), draw(st.integers(min_value=0, max_value=1)))
    return NodeSpec(
        index=index,
        upstream=tuple(sorted(upstream)),
        loops=loops,
        failures=tuple(sorted(failures.items())),
        max_retries=draw(st.integers(min_value=0, max_value=2)),
        skip_at=skip_at,
        trigger=draw(st.sampled_from(("all_successful",) * 3 + TRIGGER_NAMES)),
        skip_on_upstream_skip=draw(st.booleans()),
        parity=mode == "plain" and draw(st.booleans()),
        items=items,
        mapped_upstream=mapped_upstream,
        case=case,
        vary_children=(items is not None or mapped_upstream is not None) and draw(st.booleans()),
    )


@st.composite
def dag_specs(draw, min_tasks: int = 5, max_tasks: int = 12) -> DagSpec:
    """A random :class:`DagSpec` with ``min_tasks``..``max_tasks`` looping tasks."""
    count = draw(st.integers(min_value=min_tasks, max_value=max_tasks))
    nodes: tuple[NodeSpec, ...] = ()
    for index in range(count):
        nodes += (draw(node_specs(index, nodes)),)
    return DagSpec(nodes)
