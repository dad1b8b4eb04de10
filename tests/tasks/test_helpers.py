"""The small tasks the graph builder adds: constants and item getters."""

from __future__ import annotations

import pytest

from iterflow.core.helpers import Constant, GetItem


def test_constant_returns_its_value_and_is_named_by_type():
    c = Constant([1, 2])
    assert c.run() == [1, 2]
    assert c.name == "Constant[list]"
    assert Constant(1, name="one").name == "one"


def test_getitem_indexes_and_explains_failures():
    g = GetItem(name="t[0]")
    assert g.run([5, 6], 1) == 6
    assert g.run({"k": "v"}, "k") == "v"
    with pytest.raises(IndexError, match=r"t\[0\]: cannot index a list with 5"):
        g.run([1], 5)
    with pytest.raises(TypeError, match="cannot index a int"):
        g.run(3, 0)
