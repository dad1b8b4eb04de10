"""The state model: what a task run or a flow run is, at one moment.

States form a closed set of kinds (:class:`Kind`). Each kind has its own class
so that ``isinstance`` reads naturally, but the hierarchy is deliberately
shallow: the only subclasses are the refinements users expect to match their
parent — ``Cached`` is a ``Success``, ``TriggerFailed`` and ``TimedOut`` are
``Failed``, ``Retrying`` is ``Pending``. ``Skipped`` is *not* a ``Success``;
ask ``is_successful()`` (true for both) or ``is_skipped()``.

Every state carries ``message``, ``result`` and ``timestamp``. Finished task
states carry ``loop_count`` (how many iterations ran: 1 for a task that never
looped, 0 for one that never ran); ``Looped`` carries ``loop_index``;
``Mapped`` carries ``map_states``; a failed state keeps the exception as its
``result`` and the formatted ``traceback``. A flow's final state has ``run_id``
and a ``result`` mapping each task to its final state.

The legal moves between kinds live in :data:`TRANSITIONS`; the engine checks
every move (including those a state handler makes) against it.
"""

from __future__ import annotations

import enum
import time
from typing import Any

__all__ = [
    "TRANSITIONS",
    "Cached",
    "Cancelled",
    "Failed",
    "Kind",
    "Looped",
    "Mapped",
    "Pending",
    "Retrying",
    "Running",
    "Skipped",
    "State",
    "Success",
    "TimedOut",
    "TriggerFailed",
    "state_class",
]


class Kind(enum.StrEnum):
    """The closed set of state kinds."""

    PENDING = "Pending"
    RUNNING = "Running"
    LOOPED = "Looped"
    RETRYING = "Retrying"
    SUCCESS = "Success"
    CACHED = "Cached"
    MAPPED = "Mapped"
    FAILED = "Failed"
    TRIGGER_FAILED = "TriggerFailed"
    TIMED_OUT = "TimedOut"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


_now = time.time  # bound once: a state is made per task run, and per iteration of a loop

_FINISHED = frozenset(
    {
        Kind.SUCCESS,
        Kind.CACHED,
        Kind.MAPPED,
        Kind.FAILED,
        Kind.TRIGGER_FAILED,
        Kind.TIMED_OUT,
        Kind.SKIPPED,
        Kind.CANCELLED,
    }
)
_FAILED = frozenset({Kind.FAILED, Kind.TRIGGER_FAILED, Kind.TIMED_OUT})
_SUCCESSFUL = frozenset({Kind.SUCCESS, Kind.CACHED, Kind.SKIPPED})

#: Legal moves, from each kind to the kinds it may become next. A finished
#: state is final within one run; resuming a run starts new task runs.
TRANSITIONS: dict[Kind, frozenset[Kind]] = {
    Kind.PENDING: frozenset({Kind.RUNNING, Kind.MAPPED} | _FINISHED),
    Kind.RETRYING: frozenset({Kind.RUNNING} | _FINISHED),
    Kind.RUNNING: frozenset({Kind.LOOPED, Kind.RETRYING} | _FINISHED),
    Kind.LOOPED: frozenset({Kind.RUNNING} | _FINISHED),
}
for _kind in _FINISHED:
    TRANSITIONS[_kind] = frozenset()


def check_transition(
    old: State, new: State, task_name: str, history: list[State] | None = None, *,
    owner: str = "task",
) -> None:
    """Raise :class:`~iterflow.errors.InvalidTransition` unless ``old -> new`` is legal.

    The message names the task (or, with ``owner="flow"``, the flow); ``history``
    holds its recent states, shown to explain how it got there.
    """
    if new.kind not in TRANSITIONS[old.kind]:
        from iterflow.errors import InvalidTransition

        recent = [*(history or []), old]
        allowed = ", ".join(sorted(k.value for k in TRANSITIONS[old.kind])) or "nothing"
        raise InvalidTransition(
            f"{owner} {task_name!r} cannot move from {old.name} to {new.name}; "
            f"recent states: {' -> '.join(s.name for s in recent)}. From {old.name} it may "
            f"move to {allowed}: a state handler must return one of those (or the new "
            f"state it was given)",
            history=recent,
        )


class State:
    """A moment in the life of a task run or a flow run.

    >>> from iterflow.states import Success
    >>> s = Success(result=6, loop_count=6)
    >>> s.is_successful(), s.is_finished(), s.result, s.loop_count
    (True, True, 6, 6)
    """

    __slots__ = ("loop_count", "message", "result", "run_id", "timestamp", "traceback")
    kind: Kind = Kind.PENDING

    def __init__(
        self,
        message: str | None = None,
        result: Any = None,
        *,
        loop_count: int | None = None,
        traceback: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        self.message = message
        self.result = result
        self.loop_count = loop_count
        self.traceback = traceback
        self.timestamp = _now() if timestamp is None else timestamp
        self.run_id: str | None = None

    # -- predicates -------------------------------------------------------
    def is_pending(self) -> bool:
        """Not started yet, or waiting to retry."""
        return self.kind in (Kind.PENDING, Kind.RETRYING)

    def is_running(self) -> bool:
        """An iteration is executing right now."""
        return self.kind is Kind.RUNNING

    def is_looped(self) -> bool:
        """An iteration ended with ``LOOP``; the next one follows."""
        return self.kind is Kind.LOOPED

    def is_retrying(self) -> bool:
        """An iteration failed and will be retried."""
        return self.kind is Kind.RETRYING

    def is_finished(self) -> bool:
        """The run is over: nothing about it will change in this run."""
        return self.kind in _FINISHED

    def is_successful(self) -> bool:
        """Finished well: ``Success``, ``Cached``, ``Skipped`` (or a good ``Mapped``)."""
        return self.kind in _SUCCESSFUL

    def is_failed(self) -> bool:
        """Finished badly: ``Failed``, ``TriggerFailed``, ``TimedOut`` (or a bad ``Mapped``)."""
        return self.kind in _FAILED

    def is_skipped(self) -> bool:
        """Skipped: a branch not taken, an upstream skip, or ``SKIP``."""
        return self.kind is Kind.SKIPPED

    def is_cached(self) -> bool:
        """Finished from a cached value without running."""
        return self.kind is Kind.CACHED

    def is_mapped(self) -> bool:
        """The parent of mapped children."""
        return self.kind is Kind.MAPPED

    def is_cancelled(self) -> bool:
        """Stopped by Ctrl-C, SIGTERM or a cancel request."""
        return self.kind is Kind.CANCELLED

    # -- display ----------------------------------------------------------
    @property
    def name(self) -> str:
        """The kind's name, e.g. ``"Looped"``."""
        return self.kind.value

    def __repr__(self) -> str:
        extra = []
        if self.message:
            extra.append(repr(self.message))
        if self.kind is Kind.LOOPED:
            extra.append(f"loop_index={getattr(self, 'loop_index', None)}")
        elif self.loop_count is not None:
            extra.append(f"loop_count={self.loop_count}")
        return f"<{self.name}{': ' + ', '.join(extra) if extra else ''}>"

    def __reduce__(self):
        # Slots without __dict__: pickle through a plain dict of the fields.
        fields = {name: getattr(self, name, None) for name in _all_slots(type(self))}
        return (_rebuild_state, (type(self), fields))


def _all_slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    return names


def _rebuild_state(cls: type[State], fields: dict) -> State:
    state = cls.__new__(cls)
    for name, value in fields.items():
        setattr(state, name, value)
    return state


class Pending(State):
    """Not started yet."""

    __slots__ = ()
    kind = Kind.PENDING


class Retrying(Pending):
    """An iteration failed; it runs again (same ``loop_index`` and ``loop_result``)."""

    __slots__ = ("loop_index", "run_count")
    kind = Kind.RETRYING

    def __init__(self, message=None, result=None, *, loop_index: int = 0, run_count: int = 1, **kw):
        super().__init__(message, result, **kw)
        self.loop_index = loop_index
        self.run_count = run_count


class Running(State):
    """An iteration is executing; ``loop_index`` says which."""

    __slots__ = ("loop_index",)
    kind = Kind.RUNNING

    def __init__(
        self,
        message: str | None = None,
        result: Any = None,
        *,
        loop_index: int = 0,
        loop_count: int | None = None,
        traceback: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        # State.__init__ written out: a loop makes one of these (and one Looped)
        # per iteration, and the call through super() costs as much again.
        self.message = message
        self.result = result
        self.loop_count = loop_count
        self.traceback = traceback
        self.timestamp = _now() if timestamp is None else timestamp
        self.run_id = None
        self.loop_index = loop_index


class Looped(State):
    """Iteration ``loop_index`` raised ``LOOP``; ``result`` goes to the next one."""

    __slots__ = ("loop_index",)
    kind = Kind.LOOPED

    __init__ = Running.__init__  # the same fields, set the same (fast) way


class Success(State):
    """Finished well; ``result`` is the task's value."""

    __slots__ = ()
    kind = Kind.SUCCESS


_new = object.__new__


def plain_success(result: Any, loop_count: int) -> Success:
    """``Success(result=result, loop_count=loop_count)``, made without calling the class.

    The fields State.__init__ sets, set the same way: calling a class whose
    ``__init__`` is Python code packs its arguments into a tuple and a dict,
    which costs a chain (a Success per link) twice what the fields do.
    """
    state = _new(Success)
    state.message = None
    state.result = result
    state.loop_count = loop_count
    state.traceback = None
    state.timestamp = _now()
    state.run_id = None
    return state


class Cached(Success):
    """Finished from a cached final value; the task (and its loop) did not run."""

    __slots__ = ()
    kind = Kind.CACHED


class Mapped(State):
    """The parent of a mapped task: ``map_states`` are its children's final states.

    ``result`` is the list of the children's values, in order. A ``Mapped``
    state is successful when every child is, failed when any child failed.
    """

    __slots__ = ("map_states",)
    kind = Kind.MAPPED

    def __init__(self, message=None, result=None, *, map_states: list[State] | None = None, **kw):
        self.map_states = list(map_states or [])
        if result is None:
            result = [child.result for child in self.map_states]
        super().__init__(message, result, **kw)

    def is_successful(self) -> bool:
        return all(child.is_successful() for child in self.map_states)

    def is_failed(self) -> bool:
        return any(child.is_failed() or child.is_cancelled() for child in self.map_states)


class Failed(State):
    """Finished badly; ``result`` is the exception (if any), ``traceback`` its text."""

    __slots__ = ()
    kind = Kind.FAILED


class TriggerFailed(Failed):
    """Did not run: the task's trigger was not met by its upstream states."""

    __slots__ = ()
    kind = Kind.TRIGGER_FAILED


class TimedOut(Failed):
    """An iteration ran longer than the task's ``timeout``."""

    __slots__ = ()
    kind = Kind.TIMED_OUT


class Skipped(State):
    """Did not run: a branch not taken, a skipped upstream, or ``SKIP``."""

    __slots__ = ()
    kind = Kind.SKIPPED


class Cancelled(State):
    """Stopped by Ctrl-C, SIGTERM or a cancel request; resumable like a failure."""

    __slots__ = ()
    kind = Kind.CANCELLED


_BY_KIND: dict[Kind, type[State]] = {
    cls.kind: cls
    for cls in (
        Pending,
        Retrying,
        Running,
        Looped,
        Success,
        Cached,
        Mapped,
        Failed,
        TriggerFailed,
        TimedOut,
        Skipped,
        Cancelled,
    )
}


def state_class(kind: Kind | str) -> type[State]:
    """The class for a kind or its name: ``state_class("Looped") is Looped``."""
    return _BY_KIND[Kind(kind)]
