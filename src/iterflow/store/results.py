"""Turning results into bytes and back, with a text preview beside each.

Two serializers, chosen per task or flow by name:

``"pickle"`` (the default)
    Tries the standard library's :func:`pickle.dumps` first — several times
    faster than cloudpickle for the small values a loop passes on — and falls
    back to cloudpickle for what it cannot do (lambdas, local classes). A value
    whose pickle mentions ``__main__`` is redone with cloudpickle too: stdlib
    pickle stores ``__main__.Thing`` by *name*, and the process that resumes a
    run (``iterflow resume``) has a different ``__main__``; cloudpickle stores
    such classes and functions by value (:func:`iterflow.pickling.dumps`, which
    the Dask executor uses too). Loading is :func:`pickle.loads` either way
    (cloudpickle's output is ordinary pickle data).
``"json"``
    :func:`json.dumps`, for values other tools should read. Tuples come back
    as lists, as JSON has no tuple.

Every stored result gets a *preview*: its ``repr``, at most
:data:`PREVIEW_CHARS` characters, built with :mod:`reprlib` for containers so
that a million-element list is not turned into a megabyte string to keep 200
characters of it. Displays read the preview; nothing is unpickled to show it.

Serialized values of more than :data:`FILE_THRESHOLD` bytes are written to a
file under the store's results directory (``$ITERFLOW_HOME/results/<run>/``)
and the database keeps the path, so the database stays small and fast.
"""

from __future__ import annotations

import json
import os
import pickle
import reprlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iterflow.errors import SerializationError, StoreError
from iterflow.pickling import dumps, type_name

__all__ = [
    "DEFAULT_SERIALIZER",
    "FILE_THRESHOLD",
    "PREVIEW_CHARS",
    "SERIALIZERS",
    "Stored",
    "describe_failure",
    "deserialize",
    "load_stored",
    "make_stored",
    "preview",
    "preview_only",
    "read_result_file",
    "serialize",
    "write_result_file",
]

SERIALIZERS = ("pickle", "json")
DEFAULT_SERIALIZER = "pickle"
#: Serialized results larger than this (bytes) go to a file, not the database.
FILE_THRESHOLD = 1024 * 1024
#: Longest preview kept beside a result.
PREVIEW_CHARS = 200

_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Values whose repr is short and cheap: no need for reprlib's machinery.
_PLAIN = frozenset({int, float, bool, type(None), complex})
# A value that serializes to this few bytes has a short, cheap repr.
_SMALL = 512
# Values stdlib pickle stores completely, with no reference to any module.
_SELF_CONTAINED = _PLAIN | {str, bytes}


#: A result as the store keeps it: ``(serializer, data, path, size, preview)``.
#: ``data`` holds the serialized bytes, or ``path`` the file they were written
#: to; both are ``None`` when the value could not be serialized and only its
#: preview was kept (a failed task's exception, say). A plain tuple, because
#: one is made per iteration in the task's own thread.
Stored = tuple[str, bytes | None, str | None, int, str]


def _make_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxstring = PREVIEW_CHARS
    r.maxother = PREVIEW_CHARS
    r.maxlong = 60
    for attr in ("maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
        setattr(r, attr, 24)
    r.maxdict = 12
    return r


_REPR = _make_repr()


def preview(value: Any, serialized_size: int | None = None) -> str:
    """A short ``repr`` of ``value`` (at most :data:`PREVIEW_CHARS` characters).

    ``serialized_size``, when known, says the value is small enough for a
    plain ``repr`` (reprlib is several times slower on small containers).

    >>> preview(list(range(1000)))[:30]
    '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9,'
    """
    kind = type(value)
    try:
        if kind in _PLAIN or (serialized_size is not None and serialized_size <= _SMALL):
            text = repr(value)
        elif kind is str or kind is bytes:
            # Cut before repr so a huge string costs no more than a small one.
            text = repr(value[: PREVIEW_CHARS + 1])
        else:
            text = _REPR.repr(value)
    except Exception as exc:  # a broken __repr__ must not break recording
        text = f"<{kind.__qualname__} object (repr failed: {type(exc).__name__})>"
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text


def _dumps_pickle(value: Any) -> bytes:
    if type(value) in _SELF_CONTAINED:
        return pickle.dumps(value, protocol=_PROTOCOL)
    return dumps(value)


def serialize(value: Any, serializer: str | None = None) -> bytes:
    """Serialize ``value`` with ``serializer`` (``"pickle"`` or ``"json"``).

    Raises whatever the serializer raises (the caller knows the task and the
    iteration, and words the :class:`SerializationError`), or
    :class:`SerializationError` for an unknown serializer name.

    >>> deserialize(serialize({"a": 1}, "json"), "json")
    {'a': 1}
    """
    name = serializer or DEFAULT_SERIALIZER
    if name == "pickle":
        return _dumps_pickle(value)
    if name == "json":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    raise SerializationError(
        f"Unknown serializer {name!r}: expected one of {', '.join(map(repr, SERIALIZERS))}."
    )


def deserialize(data: bytes, serializer: str) -> Any:
    """The value that :func:`serialize` turned into ``data``."""
    if serializer == "pickle":
        return pickle.loads(data)
    if serializer == "json":
        return json.loads(data)
    raise StoreError(
        f"A stored result uses the serializer {serializer!r}, which this iterflow does not "
        f"know ({', '.join(SERIALIZERS)}); it was written by another version of iterflow."
    )


def describe_failure(value: Any, serializer: str | None, exc: BaseException) -> str:
    """Why ``value`` could not be serialized, and what to do about it."""
    name = serializer or DEFAULT_SERIALIZER
    fix = (
        "make it JSON-friendly (dicts, lists, strings, numbers) or use serializer='pickle'"
        if name == "json"
        else "make it picklable, choose serializer='json' if it is JSON-friendly"
    )
    return (
        f"a value of type {type_name(value)} cannot be serialized with {name!r} "
        f"({type(exc).__name__}: {exc}). To fix it, {fix}, or run the flow with "
        f"store=None to turn recording off."
    )


def write_result_file(directory: Path, data: bytes, serializer: str) -> str:
    """Write ``data`` to a new file in ``directory``; return its absolute path.

    The bytes go to a temporary name first and are renamed into place, so a
    file the database points to is always complete.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{uuid.uuid4().hex}.{serializer}"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(
            f"Could not write a {len(data)}-byte result to {directory} ({exc}). "
            f"Free some disk space or set ITERFLOW_HOME to a directory with room."
        ) from exc
    return str(path.resolve())


def read_result_file(path: str) -> bytes:
    """The bytes of a result file written by :func:`write_result_file`."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise StoreError(
            f"The result file {path} cannot be read ({exc}); it may have been moved or "
            f"deleted. Results over 1 MiB live under $ITERFLOW_HOME/results/."
        ) from exc


def make_stored(
    value: Any, serializer: str | None, directory: Callable[[], Path] | None
) -> Stored:
    """Serialize ``value`` into a :data:`Stored` (raises whatever serializing raises).

    ``directory()`` names where a result over :data:`FILE_THRESHOLD` goes; it
    is a function so that the common small result does not pay for building
    a path.
    """
    name = serializer or DEFAULT_SERIALIZER
    data = serialize(value, name)
    size = len(data)
    if size > FILE_THRESHOLD and directory is not None:
        return (name, None, write_result_file(directory(), data, name), size, preview(value))
    return (name, data, None, size, preview(value, size))


def preview_only(value: Any, serializer: str | None) -> Stored:
    """A :data:`Stored` that keeps only the preview (the value could not be serialized)."""
    return (serializer or DEFAULT_SERIALIZER, None, None, 0, preview(value))


def load_stored(serializer: str, data: bytes | None, path: str | None, preview_text: str) -> Any:
    """The value of a stored result row (reading its file if it has one)."""
    if data is None:
        if path is None:
            raise StoreError(
                f"This result was not recorded (its task has checkpoint=False, or it "
                f"could not be serialized); only its preview is known: {preview_text}"
            )
        data = read_result_file(path)
    return deserialize(data, serializer)
