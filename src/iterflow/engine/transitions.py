"""State transitions: state handlers, legality checks and events, in one place.

Every move of a task run, a loop block node or a flow run goes through here,
whoever decided it:

- :func:`apply_handlers` runs the owner's state handlers on ``old -> new``, in
  order, each seeing the state the previous one returned. A returned state must
  be a legal move (:func:`~iterflow.core.state.check_transition`); a handler
  that raises, or returns an illegal state, gives ``Failed`` naming the handler
  and the error, for tasks and flows alike (the later handlers then see that
  ``Failed``). Nothing a handler does escapes ``flow.run()``.
- :func:`settle` is that for a state the engine decided without running the
  task (skipped, trigger failed, cached, mapped, a job that could not be sent):
  the handlers see ``Pending -> state``.
- :func:`emit_or_fail` hands an event to the sinks; a sink that refuses it (an
  unserializable loop result, a full disk) fails the task run with its message
  instead, and that failure is recorded if it can be.
- :func:`task_run_event` is the one factory of
  :class:`~iterflow.events.TaskRunEvent`; :class:`TaskTransitions` is the loop
  driver's slow path, all of the above for one task run.

A loop makes a transition or two per iteration, so these are written for the
hot path: no state objects are made where nothing reads them (the driver only
builds a :class:`TaskTransitions` when there are handlers or sinks).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

from iterflow.core.state import Failed, Pending, State, check_transition
from iterflow.errors import InvalidTransition
from iterflow.events import TaskRunEvent

__all__ = [
    "Emit",
    "LoopedLane",
    "TaskTransitions",
    "apply_handlers",
    "emit_or_fail",
    "looped_lane",
    "settle",
    "task_lane",
    "task_run_event",
]

#: Where events go: the event bus's emitter, or a relay that carries them there.
Emit = Callable[[Any], None]

#: A state handler: ``handler(task_or_flow, old, new)`` returns the state to use, or None.
Handler = Callable[[Any, State, State], State | None]


def apply_handlers(owner: Any, handlers: Sequence[Handler], old: State, new: State, *,
                   kind: str = "task", loop_count: int | None = None,
                   history: list[State] | None = None) -> State:
    """Pass ``old -> new`` through ``owner``'s state handlers; return the state to use.

    ``kind`` says what ``owner`` is (``"task"`` or ``"flow"``), for messages;
    ``loop_count`` goes on a ``Failed`` made here; ``history`` holds the run's
    recent states, shown when a handler asks for an illegal move.
    """
    for handler in handlers:
        try:
            returned = handler(owner, old, new)
            if returned is not None:
                check_transition(old, returned, owner.name, history, owner=kind)
                new = returned
        except InvalidTransition as exc:
            new = Failed(
                f"state handler {_name(handler)!r} of {kind} {owner.name!r} returned an "
                f"illegal state: {exc}",
                exc,
                loop_count=loop_count,
            )
        except Exception as exc:
            new = Failed(
                f"state handler {_name(handler)!r} of {kind} {owner.name!r} raised "
                f"{type(exc).__name__}: {exc}",
                exc,
                loop_count=loop_count,
            )
    return new


def settle(task: Any, state: State) -> State:
    """Pass a state the engine decided without running ``task`` through its handlers.

    Handlers see ``Pending -> state`` (skipped, trigger failed, cached, mapped);
    what they return is used, like for any other transition.
    """
    if not task.state_handlers:
        return state
    return apply_handlers(task, task.state_handlers, Pending(), state,
                          loop_count=state.loop_count or 0)


def emit_or_fail(emit: Emit, make: Callable[[State, int], Any], state: State,
                 loop_index: int) -> State:
    """Emit ``make(state, loop_index)``; return ``state``, or the ``Failed`` used instead.

    A sink that cannot record the state (an unserializable loop result, a full
    disk) fails the task run rather than let it go on unrecorded; that failure
    is then recorded if it can be.
    """
    try:
        emit(make(state, loop_index))
        return state
    except Exception as exc:
        failed = Failed(str(exc), exc, loop_count=loop_index + 1)
        try:
            emit(make(failed, loop_index))
        except Exception:
            pass
        return failed


# tuple.__new__ takes the fields as one tuple and skips the named tuple's argument
# handling: three times cheaper, and the loop driver makes one event per iteration.
_new_tuple = tuple.__new__


def task_run_event(flow_run_id: str, task_run_id: str, task_slug: str, task_name: str,
                   map_index: int | None, loop_index: int, state: State, sync: bool = False,
                   serializer: str | None = None,
                   block_index: int | None = None, label: str | None = None,
                   task_run_name: str | None = None) -> TaskRunEvent:
    """A :class:`~iterflow.events.TaskRunEvent`, made the fast way (see the comment above)."""
    return _new_tuple(TaskRunEvent, (flow_run_id, task_run_id, task_slug, task_name, map_index,
                                     loop_index, state, sync, serializer, block_index, label,
                                     task_run_name))


# task_run_event lays the fields out by position; keep it in step with the record.
assert TaskRunEvent._fields == (
    "flow_run_id", "task_run_id", "task_slug", "task_name", "map_index", "loop_index", "state",
    "sync", "serializer", "block_index", "label", "task_run_name",
), "TaskRunEvent changed: update task_run_event"


# TaskTransitions' lane before it is asked for.
_UNASKED: Any = object()


class TaskTransitions:
    """One task run's transitions on the loop driver's slow path: handlers, checks, events.

    The driver makes one only when the task has state handlers or an event
    sink listens; otherwise it makes no states for ``Running``/``Looped`` at all.
    """

    __slots__ = ("_lane", "emit", "handlers", "head", "history", "label", "lane_head",
                 "run_name", "serializer", "sync", "task")

    def __init__(self, task: Any, flow_run_id: str, task_run_id: str, map_index: int | None,
                 serializer: str | None, emit: Emit | None,
                 run_name: str | None = None) -> None:
        self.task = task
        self.emit = emit
        self.handlers = task.state_handlers
        # The states before, for handlers only (a child run's tasks, a map's, have none).
        self.history: collections.deque[State] | None = (
            collections.deque(maxlen=6) if self.handlers else None)
        # What every event of this task run shares, in the order task_run_event takes it.
        self.head = (flow_run_id, task_run_id, task.slug, task.name, map_index)
        self.sync = task.checkpoint == "every"
        self.serializer = serializer
        self.run_name = run_name  # the task run's name, on each of its events
        self.label: str | None = None  # the label of the iteration the state being emitted ends
        self._lane: Any = _UNASKED
        #: What the lane gets for this task run (head and run name), set with the lane.
        self.lane_head: tuple[Any, ...] = ()

    @property
    def looped_lane(self) -> LoopedLane | None:
        """Where the driver hands a plain ``Looped`` without making its state or event.

        See :func:`looped_lane`; None when this task run cannot use one. Asked on
        the first ``Looped``: most task runs (a map's children, a child run's
        tasks) never loop, and asking the sinks cost each of them.
        """
        lane = self._lane
        if lane is _UNASKED:
            emit = self.emit
            lane = self._lane = (
                looped_lane(emit, self.task.slug, self.serializer)
                if emit is not None and not self.handlers and not self.sync
                else None
            )
            self.lane_head = (*self.head, self.run_name)
        return lane

    def move(self, old: State, new: State, loop_index: int, label: str | None = None) -> State:
        """``old -> new`` at iteration ``loop_index``: the state to use, emitted.

        ``label`` is the iteration's label, given with the state that ends it.
        """
        self.label = label
        if self.handlers:
            new = apply_handlers(self.task, self.handlers, old, new, loop_count=loop_index + 1,
                                 history=list(self.history or ()))
            self.history.append(old)  # type: ignore[union-attr]  # made with handlers
            if new.loop_count is None and new.is_finished():
                new.loop_count = loop_index + 1  # before it is emitted, so sinks see it too
        if self.emit is not None:
            new = emit_or_fail(self.emit, self.event, new, loop_index)
        return new

    def event(self, state: State, loop_index: int) -> TaskRunEvent:
        return task_run_event(*self.head, loop_index, state, self.sync, self.serializer, None,
                              self.label, self.run_name)

    def ended(self, state: State, loop_index: int) -> State:
        if state.loop_count is None:
            state.loop_count = loop_index + 1
        return state


#: A looped lane: ``lane(head, loop_index, value, label)`` records the plain ``Looped``
#: state of iteration ``loop_index`` (``head``: flow run id, task run id, task slug, task
#: name, map index, task run name) and returns True, or returns False having recorded nothing:
#: the driver then makes the state and its event as usual.
LoopedLane = Callable[[tuple[Any, ...], int, Any, "str | None"], bool]


def looped_lane(emit: Emit, slug: str, serializer: str | None) -> LoopedLane | None:
    """The lane of the sinks behind ``emit`` for task ``slug``'s plain ``Looped`` states, if any.

    A loop's one event per iteration costs more to make (a state, an event,
    the sink's dispatch on its type) than the store spends recording it. A
    sink, or the :class:`~iterflow.events.EventBus` of several, that offers
    ``looped_lane(slug, serializer)`` takes those iterations as plain values
    instead. Only ``emit`` that is a sink's (or the bus's) own bound method
    reaches one; a relay (another thread's, a loop block's) goes the usual way.
    """
    offer = getattr(getattr(emit, "__self__", None), "looped_lane", None)
    return offer(slug, serializer) if offer is not None else None


#: A task lane: ``(started, succeeded, block_index)``. ``started(head, loop_index,
#: block_index)`` records a plain ``Running`` of the task run ``head`` names (as a
#: looped lane's head) and ``succeeded(head, loop_index, block_index, value, label)`` a
#: plain ``Success(result=value)`` ending its iteration ``loop_index``; each returns True,
#: or False having recorded nothing: the driver then makes the state and its event as usual.
TaskLane = tuple[Callable[..., bool], Callable[..., bool], "int | None"]


def task_lane(emit: Emit, slug: str, serializer: str | None) -> TaskLane | None:
    """The lane of the sink behind ``emit`` for task ``slug``'s plain start and success.

    A short task run (a chain's link, a map's child, a loop block's body task)
    makes two events, ``Running`` and ``Success``; making them (two states,
    two events, the sink's dispatch) cost its thread more than the store
    spends recording them. A sink that offers ``task_lane(slug, serializer)``
    takes them as plain values. ``emit`` reaches one when it is that sink's
    own bound method (the only sink), or an emitter with a ``task_lane`` of its
    own (a loop block's relay, which adds its block index). Only for task runs
    with no state handler and no ``checkpoint="every"``: the caller checks.
    """
    owner = getattr(emit, "__self__", None)
    offer = getattr(emit if owner is None else owner, "task_lane", None)
    return None if offer is None else offer(slug, serializer)


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or repr(fn)
