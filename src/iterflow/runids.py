"""The task-run id format: the one place that builds and reads it.

Every task run has a text id, deterministic so that a resumed run finds its
task runs again::

    <run id>/<slug>                          a task run of the flow
    <run id>/<slug>/<map index>              a mapped child
    <block id>/<k>/<slug>[/<map index>]      a task run in iteration k of a loop block
    <block id>/<k>/attempt<n>/<slug>[/...]   ... in the n-th attempt (n >= 2) at iteration k

where ``<block id>`` is the loop block's own task run id (blocks nest). The
part before ``/<slug>[/<map index>]`` is the task run's *scope*: the run id
itself, or an iteration's prefix ``<block id>/<k>[/attempt<n>]``. The engine
builds ids with these functions; the store reads them back with the same
ones. Nothing else splits an id by hand.

>>> tid = task_run_id(iteration_prefix("run1/train", 4, attempt=2), "fit")
>>> tid
'run1/train/4/attempt2/fit'
>>> scope_prefix(tid, "fit", None)
'run1/train/4/attempt2'
>>> split_attempt("run1/train/4/attempt2")
('run1/train/4', 2)
>>> block_index_of(tid, "fit", None, "run1")
4
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

__all__ = [
    "block_index_of",
    "iteration_prefix",
    "latest_attempt",
    "scope_prefix",
    "split_attempt",
    "subflow_run_id",
    "task_run_id",
]

_ATTEMPT = "attempt"


def task_run_id(prefix: str, slug: str, map_index: int | None = None) -> str:
    """The id of a task run in the scope whose ids start with ``prefix``.

    The flow's own scope has the run id as its prefix; an iteration of a loop
    block has :func:`iteration_prefix`.
    """
    return f"{prefix}/{slug}" if map_index is None else f"{prefix}/{slug}/{map_index}"


def iteration_prefix(block_task_run_id: str, index: int, attempt: int = 1) -> str:
    """Where the ids of attempt ``attempt`` at iteration ``index`` of a block start.

    A retried iteration runs its tasks again as new task runs, so each attempt
    after the first has ids of its own and every task run's history stays legal.
    """
    base = f"{block_task_run_id}/{index}"
    return base if attempt == 1 else f"{base}/{_ATTEMPT}{attempt}"


def split_attempt(prefix: str) -> tuple[str, int]:
    """``(iteration prefix of attempt 1, attempt number)`` of a scope prefix."""
    base, _, last = prefix.rpartition("/")
    if base and last.startswith(_ATTEMPT) and last[len(_ATTEMPT):].isdigit():
        return base, int(last[len(_ATTEMPT):])
    return prefix, 1


def scope_prefix(task_run_id: str, task_slug: str, map_index: int | None) -> str | None:
    """The scope a task run id lives in (see the module docstring); ``None`` for another shape."""
    suffix = f"/{task_slug}" if map_index is None else f"/{task_slug}/{map_index}"
    if task_run_id.endswith(suffix) and len(task_run_id) > len(suffix):
        return task_run_id[: -len(suffix)]
    return None


def block_index_of(
    task_run_id: str, task_slug: str, map_index: int | None, run_id: str
) -> int | None:
    """The loop-block iteration ``k`` a task run belongs to; ``None`` at the flow's level."""
    scope = scope_prefix(task_run_id, task_slug, map_index)
    if scope is None or scope == run_id:
        return None
    base, _attempt = split_attempt(scope)
    last = base.rpartition("/")[2]
    return int(last) if last.isdigit() else None


def latest_attempt(prefixes: Iterable[str], iteration: str) -> tuple[int, str] | None:
    """``(attempt, prefix)`` of the latest attempt at ``iteration`` among ``prefixes``.

    ``iteration`` is the first attempt's prefix (``<block id>/<k>``); ``None``
    when no attempt at it is among ``prefixes``.
    """
    found: tuple[int, str] | None = None
    for prefix in prefixes:
        base, attempt = split_attempt(prefix)
        if base == iteration and (found is None or attempt > found[0]):
            found = (attempt, prefix)
    return found


# Fixed, so that a child run's id depends on its task run's id alone.
_SUBFLOW_NAMESPACE = uuid.UUID("6f1c2a7e-9b1d-4f57-8a3e-2d4c5b6a7f80")
_NAMESPACE_BYTES = _SUBFLOW_NAMESPACE.bytes


def subflow_run_id(task_run_id: str) -> str:
    """The run id of the child flow run that the subflow task run ``task_run_id`` starts.

    Deterministic, so that a resumed parent (or a retry) finds its child run
    again; shaped like any other run id (32 hex digits).

    >>> subflow_run_id("run1/ingest") == subflow_run_id("run1/ingest")
    True
    >>> len(subflow_run_id("run1/ingest"))
    32
    """
    # uuid.uuid5(_SUBFLOW_NAMESPACE, task_run_id).hex, without building a UUID (a
    # fifth of its cost): a child run is started per subflow call.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + task_run_id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return digest.hex()
