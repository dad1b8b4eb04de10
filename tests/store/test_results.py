"""Serializers, previews and result files (no database needed)."""

from __future__ import annotations

import pickle
import sys
import time
import types

import pytest

from iterflow.errors import SerializationError, StoreError
from iterflow.store import results
from iterflow.store.results import (
    FILE_THRESHOLD,
    PREVIEW_CHARS,
    deserialize,
    load_stored,
    make_stored,
    preview,
    serialize,
)


@pytest.mark.parametrize(
    "value", [0, -7, 3.5, True, None, "text", b"bytes", [1, [2, 3]], {"a": (1, 2)}, {1, 2}]
)
def test_pickle_round_trip(value):
    assert deserialize(serialize(value, "pickle"), "pickle") == value


def test_pickle_falls_back_to_cloudpickle_for_lambdas():
    double = lambda x: 2 * x  # noqa: E731 - the point is that it is a lambda
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(double)
    assert deserialize(serialize(double), "pickle")(21) == 42


def test_values_from_main_are_pickled_by_value(monkeypatch):
    # A class defined in a script: stdlib pickle would store "__main__.Point",
    # which a resuming process (with another __main__) cannot find.
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    namespace: dict = {"__name__": "__main__"}
    exec("class Point:\n    def __init__(self, x):\n        self.x = x\n", namespace)
    main.Point = namespace["Point"]
    data = serialize(namespace["Point"](3), "pickle")
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert deserialize(data, "pickle").x == 3


def test_json_round_trip_and_failure():
    data = serialize({"a": [1, 2.5, "x", None]}, "json")
    assert data == b'{"a":[1,2.5,"x",null]}'
    assert deserialize(data, "json") == {"a": [1, 2.5, "x", None]}
    assert deserialize(serialize((1, 2), "json"), "json") == [1, 2]  # JSON has no tuples
    with pytest.raises(TypeError):
        serialize({1, 2}, "json")


def test_unknown_serializer():
    with pytest.raises(SerializationError, match="Unknown serializer 'xml'"):
        serialize(1, "xml")
    with pytest.raises(StoreError, match="serializer 'xml'"):
        deserialize(b"", "xml")


def test_preview_is_short_and_cheap_for_huge_values():
    big = list(range(1_000_000))
    start = time.perf_counter()
    text = preview(big)
    assert time.perf_counter() - start < 0.05  # reprlib: never builds the full repr
    assert text.startswith("[0, 1, 2,") and len(text) <= PREVIEW_CHARS
    assert len(preview("x" * 10_000)) == PREVIEW_CHARS
    assert preview(b"y" * 10_000).startswith("b'yyy")
    assert preview({"k": 1}) == "{'k': 1}"


def test_preview_survives_a_broken_repr():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert "Broken" in preview(Broken())  # reprlib's own fallback
    # The small-value path calls repr directly; its failure is caught too.
    assert preview(Broken(), serialized_size=10) == (
        "<test_preview_survives_a_broken_repr.<locals>.Broken object "
        "(repr failed: RuntimeError)>"
    )


def test_large_results_go_to_a_file(tmp_path):
    value = b"z" * (FILE_THRESHOLD + 1)
    serializer, data, path, size, shown = make_stored(value, "pickle", lambda: tmp_path / "r")
    assert data is None and path is not None and size > FILE_THRESHOLD
    assert path.startswith(str(tmp_path / "r"))
    assert shown.startswith("b'zzz")
    assert load_stored(serializer, data, path, shown) == value
    # No temporary file is left behind.
    assert [p.name.endswith(".pickle") for p in (tmp_path / "r").iterdir()] == [True]


def test_small_results_stay_inline(tmp_path):
    stored = make_stored([1, 2], "json", lambda: tmp_path / "never")
    assert stored == ("json", b"[1,2]", None, 5, "[1, 2]")
    assert not (tmp_path / "never").exists()


def test_missing_result_file_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="cannot be read"):
        load_stored("pickle", None, str(tmp_path / "gone.pickle"), "1")


def test_preview_only_result_cannot_be_loaded():
    with pytest.raises(StoreError, match="only its preview is known: <lock>"):
        load_stored("pickle", None, None, "<lock>")


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="Could not write"):
        results.write_result_file(blocker / "sub", b"data", "pickle")
