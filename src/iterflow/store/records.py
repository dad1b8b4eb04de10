"""What the store's readers return: plain frozen records, ready for JSON.

Each is a frozen dataclass whose ``as_dict()`` is ready for ``json.dumps``
(times are epoch seconds). Field names follow the CLI's JSON (DESIGN §9).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IterationRecord",
    "LogEntry",
    "MetricRecord",
    "MetricSummary",
    "RunInfo",
    "TaskRunInfo",
]


class _Record:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class RunInfo(_Record):
    """One flow run. ``state`` is what to show (``Crashed`` for a dead live run)."""

    run_id: str
    flow_name: str
    state: str
    started: float | None
    ended: float | None
    recorded_state: str
    parameters: dict[str, Any] | None
    source: str | None
    pid: int | None
    host: str | None
    heartbeat: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class TaskRunInfo(_Record):
    """One task run (a mapped child is its own task run, with its ``map_index``).

    ``loop_count`` is the number of iterations run (for a finished task run,
    its final ``loop_count``; while looping, the iterations recorded so far).
    ``result_preview`` is the preview of the final result, if any.
    ``block_index`` is, for a task inside a loop block, the block's iteration
    this task run belongs to (each iteration runs its body tasks anew; of
    nested blocks, the innermost); ``None`` outside blocks.
    ``task_run_name`` is the run's name from the task's ``task_run_name``
    option (``None`` when it has none); :attr:`display_name` is what to show.
    """

    task_run_id: str
    task_slug: str
    task_name: str
    map_index: int | None
    state: str
    loop_count: int | None
    loop_index: int | None
    started: float | None
    ended: float | None
    message: str | None
    result_preview: str | None
    block_index: int | None = None
    task_run_name: str | None = None

    @property
    def display_name(self) -> str:
        """The run's name when it has one, else its task's name."""
        return self.task_run_name or self.task_name


@dataclass(frozen=True, slots=True)
class IterationRecord(_Record):
    """A recorded state of a task run: each ``Looped`` iteration, retries, the end.

    ``result_id`` can be passed to :func:`load_result`; ``preview`` shows the
    value without loading it. ``label`` is the iteration's label
    (``iterflow.set_iteration_label``, ``LOOP(label=...)``, ``it.next(label=...)``),
    on the state that ended the iteration.
    """

    loop_index: int | None
    state: str
    time: float
    message: str | None
    preview: str | None
    result_id: int | None
    size: int | None
    serializer: str | None
    block_index: int | None
    traceback: str | None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class LogEntry(_Record):
    """A log line written during a run; ``id`` grows in the order lines were written."""

    id: int
    time: float
    level: int
    level_name: str
    message: str
    task_slug: str | None
    task_run_id: str | None
    map_index: int | None
    loop_index: int | None


@dataclass(frozen=True, slots=True)
class MetricRecord(_Record):
    """One value logged with ``iterflow.log_metric``, in one iteration of a task run.

    ``block_index`` is the loop block's iteration when the task runs in one.
    """

    task_name: str | None
    map_index: int | None
    loop_index: int | None
    block_index: int | None
    name: str
    value: float
    time: float


@dataclass(frozen=True, slots=True)
class MetricSummary(_Record):
    """One metric of one task over a run: how many values, the first, last, least, most."""

    task_name: str | None
    name: str
    count: int
    first: float
    last: float
    min: float
    max: float
