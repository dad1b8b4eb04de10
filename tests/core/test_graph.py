"""Graph algorithms on plain values: paths and a stable topological order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterflow.core.graph import find_path, topological_order


def test_find_path_follows_children():
    children = {"a": ["b"], "b": ["c", "d"], "d": ["e"]}
    assert find_path("a", "e", children) == ["a", "b", "d", "e"]
    assert find_path("a", "a", children) == ["a"]
    assert find_path("e", "a", children) is None


def test_find_path_on_a_deep_chain_does_not_recurse():
    n = 50_000
    children = {i: [i + 1] for i in range(n)}
    path = find_path(0, n, children)
    assert path is not None and len(path) == n + 1


def test_topological_order_is_stable():
    children = {"c": ["a"], "b": [], "a": []}
    assert topological_order(["a", "b", "c"], children) == ["b", "c", "a"]


def test_topological_order_refuses_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        topological_order([1, 2], {1: [2], 2: [1]})


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_topological_order_puts_every_parent_first(data):
    n = data.draw(st.integers(min_value=1, max_value=15))
    children = {
        i: data.draw(st.lists(st.integers(min_value=i + 1, max_value=n), unique=True, max_size=3))
        for i in range(n)
    }
    nodes = data.draw(st.permutations(list(range(n + 1))))
    order = topological_order(nodes, children)
    assert sorted(order) == list(range(n + 1))
    position = {node: i for i, node in enumerate(order)}
    for parent, kids in children.items():
        for kid in kids:
            assert position[parent] < position[kid]
            assert find_path(parent, kid, children) is not None
