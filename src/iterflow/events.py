"""Event records: every state transition of a run, as a small frozen value.

The runner emits one event per transition to a list of *sinks* (the run store,
the progress display, a test's recorder). The store's history is simply this
event log; the progress display reads the same events.

A sink is any object with a ``handle(event)`` method, and optionally
``flush()`` (called before ``flow.run()`` returns) and ``close()``. ``handle``
is called synchronously in the thread that made the transition — on the
worker for remote executors, via a batching relay — so a sink that needs a
snapshot of a mutable result (the store) can take it right there. A sink that
raises :class:`~iterflow.errors.SerializationError` from ``handle`` for a
``Looped`` event fails that task run with the error's message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:  # states are core's; events sit below core and only name them
    from iterflow.core.state import State

__all__ = [
    "Event",
    "EventBus",
    "EventSink",
    "FlowRunEvent",
    "IterationResume",
    "LogEvent",
    "MetricEvent",
    "ResumePoint",
    "TaskRunEvent",
]


class TaskRunEvent(NamedTuple):
    """A task run moved to ``state``.

    ``loop_index`` is the iteration the state belongs to (for a finished state,
    the last iteration that ran). ``sync`` asks durable sinks to commit before
    the task continues (the task's ``checkpoint="every"``). ``block_index`` is
    the iteration of the loop block the task run belongs to, if any.
    ``label`` is the iteration's label (``iterflow.set_iteration_label``,
    ``LOOP(label=...)``, ``it.next(label=...)``), on the state that ends the
    iteration; ``task_run_name`` the task run's name (``task_run_name=``), on
    every state of a task run that has one.

    A named tuple rather than a frozen dataclass: it is just as immutable and
    three times cheaper to make, and a loop makes two per iteration. Derive a
    changed copy with ``event._replace(field=value)``.
    """

    flow_run_id: str
    task_run_id: str
    task_slug: str
    task_name: str
    map_index: int | None
    loop_index: int
    state: State
    sync: bool = False
    serializer: str | None = None
    block_index: int | None = None
    label: str | None = None
    task_run_name: str | None = None

    @property
    def time(self) -> float:
        return self.state.timestamp


@dataclass(frozen=True, slots=True)
class FlowRunEvent:
    """A flow run moved to ``state``; the first event of a run carries its set-up."""

    flow_run_id: str
    flow_name: str
    state: State
    parameters: dict[str, Any] | None = None
    tasks: tuple[tuple[str, str], ...] = ()  # (slug, name) of every task
    source: str | None = None  # where the flow came from ("path/to/file.py:flow")
    resumed: bool = False
    #: On a resumed run's first event: the slugs of the tasks that finished in the
    #: run before and are not run again (a mapped task when all its children did).
    finished: tuple[str, ...] = ()
    #: On the first event: the flow's shape for pictures (``iterflow.core.shape.describe``).
    shape: dict[str, Any] | None = None
    #: Whether a sink that records waits until the event is committed. A child
    #: flow run (a subflow) does not: its parent's own events and end cover it.
    sync: bool = True

    @property
    def time(self) -> float:
        return self.state.timestamp


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A log record written by a task (or by the engine) during a run."""

    flow_run_id: str
    task_run_id: str | None
    task_slug: str | None
    map_index: int | None
    loop_index: int | None
    level: int
    message: str
    time: float


class MetricEvent(NamedTuple):
    """A number a task logged with ``iterflow.log_metric(name, value)`` in one iteration.

    ``loop_index`` is the task's iteration; ``block_index`` that of the loop
    block it runs in, if any. ``value`` is a finite float (checked when logged).
    A named tuple, as :class:`TaskRunEvent` is: a loop may log several per iteration.
    """

    flow_run_id: str
    task_run_id: str | None
    task_slug: str | None
    task_name: str | None
    map_index: int | None
    loop_index: int | None
    block_index: int | None
    name: str
    value: float
    time: float


Event = TaskRunEvent | FlowRunEvent | LogEvent | MetricEvent


@runtime_checkable
class EventSink(Protocol):
    """Receives every event of a run; see the module docstring for the contract."""

    def handle(self, event: Event) -> None: ...


@dataclass
class ResumePoint:
    """What a resumed run already has, keyed by ``(task_slug, map_index)``.

    ``finished`` holds final states (their results loaded) of task runs that
    need not run again. ``loops`` holds, for each task run that was looping
    when the run stopped, ``(next_loop_index, loop_result)``: it continues
    there. ``parameters`` are the original run's parameters.

    These keys name the run's top-level task runs, loop block nodes included:
    a block is resumed like a looping task, at ``loops[(block_slug, None)]``,
    whose loop result is the carried value. ``iterations`` holds what the
    task runs *inside* blocks already have, per block iteration: the key is
    the iteration's task-run-id prefix, ``f"{run_id}/{block_slug}/{k}"``
    (a nested block adds ``/{inner_slug}/{k2}``; the second and later attempts
    at a retried iteration add ``/attempt{n}``, and a resumed block continues
    the latest attempt it finds), and the value has the same
    ``finished`` and ``loops`` as above for the task runs of that iteration
    (a nested block's node among them). A store builds it by grouping task
    runs by their id with ``/{slug}`` or ``/{slug}/{map_index}`` cut off:
    the run id itself is the top level, anything longer an iteration. Only
    the iteration a block continues at is read, so the store may leave out
    the iterations that finished.
    """

    run_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    finished: dict[tuple[str, int | None], State] = field(default_factory=dict)
    loops: dict[tuple[str, int | None], tuple[int, Any]] = field(default_factory=dict)
    iterations: dict[str, IterationResume] = field(default_factory=dict)


@dataclass
class IterationResume:
    """What one unfinished iteration of a loop block already has; see :class:`ResumePoint`."""

    finished: dict[tuple[str, int | None], State] = field(default_factory=dict)
    loops: dict[tuple[str, int | None], tuple[int, Any]] = field(default_factory=dict)


class EventBus:
    """Fans events out to sinks. With no sinks, the engine skips making events.

    A sink whose ``implied_running`` attribute is true says it does not need
    the ``Running`` event that follows each ``Looped`` one (the ``Looped``
    implies it: the next iteration starts at once). When every sink says so,
    :attr:`implied_running` is true and a looping task without state handlers
    does not make that event at all: half the events of a loop. State handlers
    still see every transition (DESIGN §7.9).
    """

    __slots__ = ("implied_running", "sinks")

    def __init__(self, sinks: list[Any] | None = None) -> None:
        self.sinks = [s for s in (sinks or []) if s is not None]
        self.implied_running = bool(self.sinks) and all(
            getattr(s, "implied_running", False) for s in self.sinks
        )

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.handle(event)

    def emitter(self) -> Callable[[Event], None]:
        """The cheapest callable that hands an event to every sink (for the hot path).

        With one sink that is its own ``handle``: one call per event less.
        """
        if len(self.sinks) == 1:
            return self.sinks[0].handle
        return self.emit

    def looped_lane(self, slug: str, serializer: str | None) -> Callable[..., bool] | None:
        """One lane for task ``slug``'s plain ``Looped`` states through every sink, or None.

        Given only when every sink offers one (see
        :func:`iterflow.engine.transitions.looped_lane`) and at most one of them
        may decline a state: a sink whose lane always takes it says so with a
        true ``lane_always_takes`` attribute. The one that may decline is asked
        first; when it declines, the others are not asked and the driver emits
        the event to every sink as usual.
        """
        # The sink that may decline first (sorted() keeps the sinks' order otherwise).
        sinks = sorted(self.sinks, key=lambda s: bool(getattr(s, "lane_always_takes", False)))
        if sum(1 for s in sinks if not getattr(s, "lane_always_takes", False)) > 1:
            return None  # two lanes that may decline cannot be asked in one call
        lanes: list[Callable[..., bool]] = []
        for sink in sinks:
            offer = getattr(sink, "looped_lane", None)
            lane = offer(slug, serializer) if offer is not None else None
            if lane is None:
                return None
            lanes.append(lane)
        if len(lanes) == 1:
            return lanes[0]
        first, rest = lanes[0], lanes[1:]

        def every_sink(head: tuple[Any, ...], loop_index: int, value: Any,
                       label: str | None) -> bool:
            if not first(head, loop_index, value, label):
                return False
            for lane in rest:
                lane(head, loop_index, value, label)
            return True

        return every_sink

    def flow_lane(self) -> Callable[..., None] | None:
        """The only sink's ``record_flow``, where it has one; else None.

        A sink that offers ``record_flow(run_id, flow_name, state, parameters,
        tasks, source, shape, signal)`` takes a flow run's states as values,
        with no :class:`FlowRunEvent` made (the store's, see
        ``iterflow.store.sink_lanes``): a child run of a subflow has two. With
        other sinks listening, the runner makes the event for all of them.
        """
        if len(self.sinks) != 1:
            return None
        return getattr(self.sinks[0], "record_flow", None)

    def flush(self) -> None:
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
