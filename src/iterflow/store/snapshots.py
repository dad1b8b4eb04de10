"""Snapshots: a value as the store will keep it, taken in the thread that made it.

A loop result may be mutated by the next iteration, so the store serializes
it the moment its state is handed over (DESIGN §7.10), in the task's
thread, and keeps only the bytes (:data:`~iterflow.store.results.Stored`).
A value that must be recorded and cannot be serialized raises
:class:`~iterflow.errors.SerializationError` naming the task, the iteration
and the type; other values (a failure's exception) keep a preview at least.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iterflow.core.state import Kind
from iterflow.errors import SerializationError, StoreError
from iterflow.events import TaskRunEvent
from iterflow.store.results import (
    SERIALIZERS,
    Stored,
    describe_failure,
    make_stored,
    preview,
    preview_only,
)

__all__ = ["PREVIEW_ONLY", "SCALARS", "snapshot", "snapshot_parameters", "task_label"]

#: The serializer a task with ``checkpoint=False`` records with: no value, a preview.
PREVIEW_ONLY = "preview-only"

#: Loop results common enough for a fast path: nothing can fail, nothing goes to a file.
SCALARS = frozenset({int, float, bool})
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Parameter values that are their own JSON (a float only when finite: JSON has no NaN).
_JSON_EXACT = frozenset({str, int, bool, type(None)})


def task_label(event: TaskRunEvent) -> str:
    """``task 'name'`` (with its map index) for messages about ``event``'s task run."""
    mapped = "" if event.map_index is None else f" (map_index {event.map_index})"
    return f"task {event.task_name!r}{mapped}"


def snapshot(
    event: TaskRunEvent, value: Any, strict: bool, results_dir: Callable[[str], Path]
) -> Stored:
    """``value``, the result carried by ``event``'s state, serialized as the store keeps it.

    ``strict``: the value must be recorded (a loop result, a final value), so
    failing to serialize it raises; otherwise only a preview is kept.
    ``results_dir(run_id)`` is where a value too big for the database goes.
    """
    serializer = event.serializer
    if serializer == PREVIEW_ONLY:
        # checkpoint=False: states and a preview, never the value (it may be a
        # connection or a client, which cannot be serialized); a resume reruns it.
        return preview_only(value, None)
    if serializer is not None and serializer not in SERIALIZERS:
        raise SerializationError(
            f"{task_label(event).capitalize()} asks for the serializer {serializer!r}; "
            f"iterflow has {', '.join(map(repr, SERIALIZERS))}."
        )
    if type(value) in SCALARS and serializer != "json":
        # The common loop result (a number, a short string): nothing can fail,
        # nothing goes to a file, so skip the general path.
        data = pickle.dumps(value, _PROTOCOL)
        return ("pickle", data, None, len(data), preview(value))
    try:
        return make_stored(value, serializer, lambda: results_dir(event.flow_run_id))
    except StoreError:
        raise  # the results directory cannot be written: a store problem
    except Exception as exc:
        if not strict:
            return preview_only(value, serializer)
        what = (
            f"the loop result of {task_label(event)} at iteration {event.loop_index}"
            if type(event.state).kind is Kind.LOOPED
            else f"the result of {task_label(event)} (iteration {event.loop_index})"
        )
        raise SerializationError(
            f"Cannot record {what}: {describe_failure(value, serializer, exc)}"
        ) from exc


def snapshot_parameters(
    params: dict[str, Any], results_dir: Callable[[], Path]
) -> tuple[dict[str, Any], Stored | None]:
    """A run's parameters as JSON to show, and their pickled originals when JSON is not exact.

    ``results_dir()`` is the run's directory for values too big for the database
    (asked for only then: most runs' parameters are plain JSON).
    """
    if _plain(params):
        return dict(params), None  # a copy: the caller may change its dict later
    try:
        as_json = json.loads(json.dumps(params))
        if as_json == params:
            return as_json, None
    except (TypeError, ValueError):
        pass
    # Not exactly JSON (tuples, datetimes, objects): keep a readable JSON
    # version for display and the pickled originals for resuming.
    shown: dict[str, Any] = {}
    for key, value in params.items():
        try:
            json.dumps(value)
            shown[str(key)] = value
        except (TypeError, ValueError):
            shown[str(key)] = preview(value)
    try:
        stored = make_stored(dict(params), "pickle", results_dir)
    except StoreError:
        raise
    except Exception:
        stored = preview_only(params, "pickle")
    return shown, stored


def _plain(params: dict[str, Any]) -> bool:
    """Whether ``params`` come back from JSON exactly, seen without a JSON round trip.

    A child run (a subflow call) records its parameters once per call; most are
    a few strings and numbers, for which dumping and loading cost more than the
    rest of the record.
    """
    for key, value in params.items():
        kind = type(value)
        if type(key) is not str or (
            kind not in _JSON_EXACT and not (kind is float and math.isfinite(value))
        ):
            return False
    return True
