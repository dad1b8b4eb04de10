"""What runs on a Dask worker: a job, its outgoing events, its result.

:func:`run_job` is the function the client maps over its jobs. It puts the
job's shared values back in place, gives a job that asks for one a cancel
flag that works on the worker, runs the job, and publishes its result on the
run's topic -- the same topic its events travel on.

Event batches
    The relay that :meth:`~iterflow.executors.dask.DaskExecutor.event_relay`
    returns (:class:`Relay`) pickles each event the moment it is emitted --
    so a loop result mutated by a later iteration keeps the value it had when
    ``LOOP`` was raised, and an unpicklable one raises
    :class:`~iterflow.errors.SerializationError` inside the task run, which
    fails it with a message naming the task, the iteration and the type --
    and appends it to the job's :class:`Channel`. One :class:`Flusher` per
    worker sends every channel's buffer each ``event_interval`` seconds (a
    channel sends at once when its buffer is full, or for a
    ``checkpoint="every"`` event). Each batch carries its job attempt's id and
    a sequence number, so the client can put an attempt's batches back in
    order (:mod:`iterflow.executors.dask.stream`), and the job's key, so the
    client can drop what a job it has closed still sends.

Results
    When a job ends, :func:`run_job` publishes its result, the *payload*: the
    final state, pickled on the worker (so an unpicklable result is a clear
    error, not a failure deep in a transfer), together with the channel's
    unsent tail of events. The client learns that the job is done from that
    message: no done-callback per future and no ``gather`` round trip per
    result. A payload over ``push_limit`` bytes is not pushed through the
    scheduler; the message only says "done" and the client fetches the
    job's return value (the same payload) instead. The final event is held
    back for the tail, and when its state is the one the job returns (the
    usual case) the state is not pickled twice (``LAST_EVENT``).

Cancelling
    The runner's cancel flag (a ``threading.Event``) cannot cross processes.
    When a run is cancelled the client cancels its futures, and the worker
    marks a running task ``cancelled`` (its thread runs on: Python cannot stop
    a thread). :class:`CancelProbe`, the job's flag on the worker, reads that
    state -- a dict lookup, no round trip -- so a remote loop stops at its
    next iteration like an in-process one, and records itself ``Cancelled``.

Everything here is picklable and holds no client state: on a worker that
runs in the client's process (``processes=False``) nothing is pickled at all.
"""

from __future__ import annotations

import contextvars
import os
import pickle
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import distributed

from iterflow.errors import SerializationError
from iterflow.events import TaskRunEvent
from iterflow.pickling import dumps, type_name

__all__ = ["CancelProbe", "Packed", "Relay", "WorkerCall", "root_cause", "run_job", "token"]

# How a job's final state travels back (``how`` in a job's payload).
PICKLED = 0  # pickled on its own: ``data`` is its bytes
LAST_EVENT = 1  # it is the state of the tail's last event; ``data`` is None
UNPICKLABLE = 2  # it could not be pickled: ``data`` is the message

#: The key of ``shared`` that holds the runner's cancel flag (see Executor.submit).
CANCEL = "cancel"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: distributed wraps pickling errors in its own TypeError."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


class _Tokens:
    """Unique tokens, cheaply: a random prefix per process and a counter.

    ``uuid4()`` per job reads the OS's random source each time, a system call
    that -- in a process whose event loop thread is busy -- waits for the GIL.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._prefix = ""
        self._count = 0

    def __call__(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not repeat its parent's
                self._pid, self._prefix, self._count = os.getpid(), uuid.uuid4().hex[:16], 0
            self._count += 1
            return f"{self._prefix}{self._count:x}"


#: A token unique to this process's lifetime: job keys on the client, attempts on workers.
token = _Tokens()


def _unserializable_event(event: Any, exc: BaseException) -> str:
    if isinstance(event, TaskRunEvent):
        mapped = f" (map_index {event.map_index})" if event.map_index is not None else ""
        return (
            f"task {event.task_name!r}{mapped}, iteration {event.loop_index}: its "
            f"{event.state.name} state holds a value of type {type_name(event.state.result)} "
            f"that cannot be pickled to send it from the Dask worker to the client "
            f"({type(exc).__name__}: {exc}); make the value picklable (with cloudpickle), "
            f"or run the flow on LocalExecutor or ThreadExecutor"
        )
    return (
        f"an event of type {type_name(event)} cannot be pickled to send it from the Dask "
        f"worker to the client ({type(exc).__name__}: {exc})"
    )


# -- sending events -------------------------------------------------------------------------
class Flusher:
    """Sends the buffered events of every job on one worker, each ``interval`` seconds.

    One per worker (and interval), so a job costs a set insertion rather than
    a timer of its own. It runs on the worker's event loop while there is
    something to send, and stops when a tick finds nothing.
    """

    def __init__(self, worker: Any, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self.lock = threading.Lock()
        self.dirty: set[Channel] = set()
        self.running = False

    def mark(self, channel: Channel) -> None:
        with self.lock:
            self.dirty.add(channel)
            if self.running:
                return
            self.running = True
        # IOLoop.call_later is not thread-safe; add_callback is.
        self.worker.loop.add_callback(self._schedule)

    def _schedule(self) -> None:
        self.worker.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        with self.lock:
            dirty, self.dirty = self.dirty, set()
            if not dirty:
                self.running = False
                return
        for channel in dirty:
            channel.flush()
        self._schedule()


_flushers: dict[tuple[int, float], Flusher] = {}
_flushers_lock = threading.Lock()


def _flusher(worker: Any, interval: float) -> Flusher:
    key = (id(worker), interval)
    with _flushers_lock:
        flusher = _flushers.get(key)
        if flusher is None or flusher.worker is not worker:
            flusher = _flushers[key] = Flusher(worker, interval)
        return flusher


class Channel:
    """One job attempt's outgoing events on a worker: a buffer sent in numbered batches.

    Fed from the job's thread (and from threads the job started with a copy
    of its context); flushed from the worker's event loop. A lock guards the
    buffer and the sequence number; sending happens outside it, so two
    batches may leave out of order -- the client puts them back in order.
    """

    __slots__ = (
        "attempt", "buffer", "closed", "final", "flusher", "key", "lock", "marked",
        "max_bytes", "max_events", "seq", "size", "topic", "worker",
    )

    def __init__(self, worker: Any, topic: str, key: str, interval: float, max_events: int,
                 max_bytes: int) -> None:
        self.worker = worker
        self.topic = topic
        self.key = key
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.flusher = _flusher(worker, interval)
        self.attempt = token()
        self.lock = threading.Lock()
        self.buffer: list[bytes] = []
        self.size = 0
        self.seq = 0
        self.marked = False
        self.closed = False
        # The latest finished TaskRunEvent, held back to travel with the result:
        # (event, its bytes, the state's loop_count when it was pickled).
        self.final: tuple[Any, bytes, int | None] | None = None

    def add(self, event: Any, blob: bytes) -> None:
        batch = None
        mark = False
        with self.lock:
            if self.closed:  # a straggler (a timed-out iteration's thread): send it alone
                batch = [self.key, None, None, [blob]]
            else:
                if isinstance(event, TaskRunEvent) and event.state.is_finished():
                    if self.final is not None:  # a second final state: keep both, in order
                        self.buffer.append(self.final[1])
                    self.final = (event, blob, event.state.loop_count)
                else:
                    self.buffer.append(blob)
                    self.size += len(blob)
                if self.buffer and (
                    getattr(event, "sync", False)
                    or len(self.buffer) >= self.max_events
                    or self.size >= self.max_bytes
                ):
                    batch = self._take()
                elif self.buffer and not self.marked:
                    self.marked = mark = True
        if batch is not None:
            self.worker.log_event(self.topic, batch)
        elif mark:
            self.flusher.mark(self)

    def flush(self) -> None:
        """Send what is buffered (the flusher calls this on the worker's event loop)."""
        with self.lock:
            self.marked = False
            batch = self._take() if self.buffer and not self.closed else None
        if batch is not None:
            self.worker.log_event(self.topic, batch)

    def _take(self) -> list:
        batch = [self.key, self.attempt, self.seq, self.buffer]
        self.seq += 1
        self.buffer = []
        self.size = 0
        return batch

    def close(self, state: Any) -> tuple[str, int, list[bytes], bool]:
        """End the channel: ``(attempt, batches sent, unsent tail, state is the tail's last)``."""
        with self.lock:
            self.closed = True
            tail = self.buffer
            self.buffer = []
            is_last = False
            if self.final is not None:
                event, blob, loop_count = self.final
                is_last = event.state is state
                if is_last and state.loop_count != loop_count:
                    # The engine fills in loop_count after emitting when a state
                    # handler left it empty; the record must match the result.
                    blob = dumps(event)
                tail.append(blob)
                self.final = None
            return self.attempt, self.seq, tail, is_last

    def abort(self) -> None:
        """The job raised: send what is unsent, in sequence, and close."""
        attempt, seq, tail, _ = self.close(None)
        if tail:
            self.worker.log_event(self.topic, [self.key, attempt, seq, tail])


_channel: contextvars.ContextVar[Channel | None] = contextvars.ContextVar(
    "iterflow_dask_channel", default=None
)


class Relay:
    """What a job calls, on its worker, for each event: pickle it now, send it batched.

    Picklable and stateless -- the per-job state is the :class:`Channel`
    that :func:`run_job` puts in a context variable -- so it is right however
    distributed shares it between jobs, in-process workers (where nothing is
    pickled) included.
    """

    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __call__(self, event: Any) -> None:
        try:
            blob = dumps(event)
        except Exception as exc:
            raise SerializationError(_unserializable_event(event, exc)) from exc
        channel = _channel.get()
        if channel is not None and channel.topic == self.topic:
            channel.add(event, blob)
        else:  # emitted from a thread that did not inherit the job's context
            distributed.get_worker().log_event(self.topic, [None, None, None, [blob]])

    def __reduce__(self) -> tuple:
        return (Relay, (self.topic,))

    def __repr__(self) -> str:
        return f"<iterflow Dask event relay {self.topic}>"


# -- what a job carries -----------------------------------------------------------------------
class Packed:
    """A value sent to the workers once for many jobs: pickled once, as one blob.

    distributed would serialize a big list or dict element by element (seconds
    for a list of 20,000 numbers); a blob travels at the speed of bytes. Each
    worker keeps the one box it received, and unpickles it once, for all the
    jobs that run there.
    """

    __slots__ = ("_data", "_value")

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self._value: Any = Packed

    def value(self) -> Any:
        if self._value is Packed:  # not unpickled yet (two threads may both do it: harmless)
            self._value = pickle.loads(self._data)
            self._data = None  # keep one copy; pickled again should another worker ask
        return self._value

    def __reduce__(self) -> tuple:
        data = self._data if self._data is not None else dumps(self._value)
        return (Packed, (data,))

    def __sizeof__(self) -> int:  # what distributed's memory accounting sees
        return object.__sizeof__(self) + len(self._data or b"")


class CancelProbe:
    """A remote job's cancel flag: has the client given up on this job?

    The loop driver asks ``is_set()`` before each iteration; it reads the
    worker's own record of the task (see the module docstring).
    """

    __slots__ = ("key", "worker")

    def __init__(self, worker: Any, key: str) -> None:
        self.worker = worker
        self.key = key

    def is_set(self) -> bool:
        task = self.worker.state.tasks.get(self.key)
        return task is None or task.state == "cancelled"


class WorkerCall:
    """A job as it travels to a worker: an opaque box dask does not look into.

    ``shared`` holds the job's keyword arguments with the values that were
    sent to the workers once taken out; ``places`` says where each goes back:
    ``(name,)`` for a whole argument, ``(name, item)`` for a value inside a
    dict argument, in the order of the futures the job depends on. ``cancel``
    asks for a :class:`CancelProbe` under :data:`CANCEL`.
    """

    __slots__ = ("args", "cancel", "events", "fn", "key", "places", "push_limit", "shared",
                 "topic")

    def __init__(self, fn: Callable[..., Any], args: tuple, key: str, topic: str,
                 push_limit: int, events: tuple | None, shared: Mapping[str, Any] | None,
                 places: tuple = (), cancel: bool = False) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.topic = topic
        self.push_limit = push_limit
        # (flush interval, max events, max bytes), or None: the run has no event sinks.
        self.events = events
        self.shared = shared
        self.places = places
        self.cancel = cancel

    def __reduce__(self) -> tuple:
        return (WorkerCall, (self.fn, self.args, self.key, self.topic, self.push_limit,
                             self.events, self.shared, self.places, self.cancel))

    def keywords(self, worker: Any, shared_values: list) -> dict[str, Any]:
        """The job's keyword arguments, with the values sent once put back in place."""
        kwargs = dict(self.shared) if self.shared else {}
        copied: set[str] = set()
        for place, packed in zip(self.places, shared_values):
            name = place[0]
            if len(place) == 1:
                kwargs[name] = packed.value()
                continue
            if name not in copied:  # the dict is shared by the worker's jobs: copy it first
                kwargs[name] = dict(kwargs[name])
                copied.add(name)
            kwargs[name][place[1]] = packed.value()
        if self.cancel:
            kwargs[CANCEL] = CancelProbe(worker, self.key)
        return kwargs


def run_job(call: WorkerCall, shared_values: list) -> tuple:
    """Run one job on a worker; publish its result and return it.

    ``shared_values`` are the values sent to the workers once for many jobs
    (distributed has turned their futures into the values). The result, the
    *payload*, is ``(attempt, batches sent, tail, how, data)``: ``attempt`` is
    None when the run has no event sinks (then there is no channel and no
    tail); ``how`` says what ``data`` is (:data:`PICKLED` and friends). It is
    also the job's return value, which the client fetches when it was too big
    to publish, or when the message went missing.
    """
    worker = distributed.get_worker()
    kwargs = call.keywords(worker, shared_values)
    channel = (
        Channel(worker, call.topic, call.key, *call.events) if call.events is not None else None
    )
    reset = _channel.set(channel)
    try:
        state = call.fn(*call.args, **kwargs)
    except BaseException:
        if channel is not None:
            channel.abort()
        raise
    finally:
        _channel.reset(reset)
    attempt, sent, tail, how, data = None, 0, [], PICKLED, None
    if channel is not None:
        attempt, sent, tail, is_last = channel.close(state)
        if is_last:
            how = LAST_EVENT
    if how == PICKLED:
        try:
            data = dumps(state)
        except Exception as exc:
            how = UNPICKLABLE
            data = (
                f"its final state ({getattr(state, 'name', type_name(state))}) holds a value "
                f"of type {type_name(getattr(state, 'result', None))} that cannot be pickled to "
                f"send it back from the Dask worker ({type(exc).__name__}: {exc}); return a "
                f"picklable value"
            )
    payload = (attempt, sent, tail, how, data)
    size = sum(map(len, tail)) + (len(data) if data is not None else 0)
    if size <= call.push_limit:
        worker.log_event(call.topic, [call.key, *payload])
    else:
        worker.log_event(call.topic, [call.key])  # "done: fetch the result"
    return payload
