"""Run jobs on a Dask cluster (``distributed``): iterflow's scale-out executor.

A job is one task run, every iteration of its loop included
(:func:`~iterflow.engine.expand.run_task_run`), so a looping task runs on one
worker and never costs a round trip per iteration. This module adds three
things around that: sending jobs cheaply, carrying their events back while
they run, and bringing their results back in the right order -- all while
doing little in the client process, which for a ``LocalCluster`` also hosts
the scheduler: every CPU cycle the runner spends there is taken from it.

Sending
    :meth:`DaskExecutor.submit` does not talk to the scheduler; it queues the
    job, and :meth:`~DaskExecutor.wait` (which the runner calls as soon as it
    has submitted everything ready) sends the queue with one ``client.map``.
    A mapped task with 10,000 children is one ``update-graph`` message and
    one pickle, in which what the children share (the task, the run's
    context) is pickled once -- as with a hand-written ``client.map``. Keys
    are unique (``<task slug>-<map index>-<token>``, ``pure=False``): a
    resumed run reuses its task run ids, and one job must never be taken for
    another; the slug comes first so that distributed groups a task's runs
    (dashboard, duration estimates, queuing of large maps). When a batch
    cannot be pickled, each job is pickled alone to find the culprits; those
    fail with the cause, the others are sent.

The event stream
    Each run has a topic. Workers publish to it with ``Worker.log_event``;
    the client subscribes with ``Client.subscribe_topic``. Messages go
    through the worker's batched stream to the scheduler, which forwards them
    to the client: no round trip, ordered per worker, and only distributed's
    own machinery. (The ``Pub``/``Sub`` API is gone from distributed.) The
    client's handler runs on distributed's event-loop thread and only queues
    the message; the runner's thread handles it in ``wait()`` -- which keeps
    handling messages while it blocks, so a long loop is visible while it
    runs -- and in ``result()``. Two kinds of message travel on it:

    *Event batches.* The relay that :meth:`~DaskExecutor.event_relay` returns
    pickles each event the moment it is emitted -- so a loop result mutated
    by a later iteration keeps the value it had when ``LOOP`` was raised, and
    an unpicklable one raises :class:`~iterflow.errors.SerializationError`
    inside the task run, which fails it with a message naming the task, the
    iteration and the type -- and appends it to the job's *channel*. One
    flusher per worker sends every channel's buffer each
    :attr:`~DaskExecutor.event_interval` seconds (a channel sends at once when
    its buffer is full, or for a ``checkpoint="every"`` event).

    *Results.* When a job ends, the worker-side wrapper (:func:`_run_job`)
    publishes its result: the final state, pickled on the worker (so an
    unpicklable result is a clear error, not a failure deep in a transfer),
    together with the channel's unsent tail of events. The client learns that
    the job is done from that message: no done-callback per future and no
    ``gather`` round trip per result. A result over
    :attr:`~DaskExecutor.push_limit` bytes is not pushed through the
    scheduler; the message only says "done", and ``wait()`` fetches such
    results with one ``client.gather`` for all that finished together. A job
    that ends without a message (an error outside the task run, a job given
    up after its workers kept dying) is found by a look at the futures'
    status every half second while ``wait()`` blocks.

Shared values
    distributed pickles each job on its own, so a value inside many jobs
    travels once per job through the scheduler. The runner gives every job
    of a run the same context (the run's parameters in it), and every child
    of a mapped task the same ``unmapped(...)`` values; such a value, when it
    is at least :attr:`~DaskExecutor.share_limit` big, is scattered to every
    worker once, and the jobs depend on its future instead.

Ordering
    Each batch carries its job attempt's id and a sequence number, and the
    client delivers an attempt's batches in sequence, whatever order they
    arrive in. A job's last events travel inside its result, with the number
    of batches sent before them; ``result()`` first makes sure those batches
    are delivered (waiting, normally not at all, at most
    :attr:`~DaskExecutor.event_grace` seconds), then delivers the tail, then
    returns the state. So a task run's final state reaches the sinks before
    the runner acts on it, and never after the flow's final state. The final
    event is held back for the tail, and when its state is the one the job
    returns (the usual case) the state is not pickled twice: ``result()``
    returns the very object it just delivered, so the sinks and the flow's
    result agree.

Failures
    A worker that dies mid-job (even by SIGKILL) makes the scheduler run the
    job again elsewhere; that new *attempt* has its own id and sequence, and
    the run goes on. distributed gives up on a job only after
    ``distributed.scheduler.allowed-failures`` (default 3) workers died
    running it, which the runner reports as that task run failing. Jobs are
    never retried by distributed on exceptions (no ``retries=``): iterflow's
    own retries resume the current iteration, distributed's would restart the
    task run. A rerun attempt continues at the last recorded iteration when
    the run has a store (``spec.checkpoint_source``, asked by the task run's
    id, so a looping body task inside a loop block continues at its own
    iteration too). A cancelled run (Ctrl-C, SIGTERM) cancels its futures; a
    loop running on a worker sees that before its next iteration and stops
    there (:class:`_CancelProbe`).

Scheduling
    A looping job holds its worker thread until the loop ends. Large maps are
    queued on the scheduler and handed to threads as they free up; a job that
    distributed placed behind a long loop is moved to an idle worker by work
    stealing, within about a second.

Costs to know: event batches and pushed results pass through the scheduler,
which keeps the last ``distributed.admin.low-level-log-length`` (1,000)
messages of a topic in memory; the run's topic is dropped when the run ends.
Scripts that start a local cluster must guard their entry point with
``if __name__ == "__main__":``, as for any use of ``distributed`` with process
workers; on a remote cluster, iterflow and the flow's modules must be
importable on the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import pickle
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

try:
    import cloudpickle
    import distributed
    from dask.sizeof import sizeof
    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "DaskExecutor needs dask and distributed: pip install 'iterflow[dask]'"
    ) from _exc

from iterflow.core.state import Failed
from iterflow.engine.expand import TaskRunSpec
from iterflow.errors import ExecutorError, SerializationError
from iterflow.events import TaskRunEvent
from iterflow.executors.base import Executor
from iterflow.pickling import dumps, type_name

__all__ = ["DaskExecutor"]

logger = logging.getLogger("iterflow.executors.dask")

_PROTOCOL = pickle.HIGHEST_PROTOCOL

# How a job's final state travels back (``how`` in a job's payload).
_PICKLED = 0  # pickled on its own: ``data`` is its bytes
_LAST_EVENT = 1  # it is the state of the tail's last event; ``data`` is None
_UNPICKLABLE = 2  # it could not be pickled: ``data`` is the message

# Status of a Dask future that ended without the job's result.
_ENDED_BADLY = frozenset({"error", "cancelled"})

# Inputs of these types are never big enough to be worth sharing.
_SMALL = frozenset({type(None), bool, int, float, complex})


# -- errors, both sides -------------------------------------------------------------------
def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: distributed wraps pickling errors in its own TypeError."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


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


_token = _Tokens()


# -- the worker side --------------------------------------------------------------------------
class _Flusher:
    """Sends the buffered events of every job on one worker, each ``interval`` seconds.

    One per worker (and interval), so a job costs a set insertion rather than
    a timer of its own. It runs on the worker's event loop while there is
    something to send, and stops when a tick finds nothing.
    """

    def __init__(self, worker: Any, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self.lock = threading.Lock()
        self.dirty: set[_Channel] = set()
        self.running = False

    def mark(self, channel: _Channel) -> None:
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


_flushers: dict[tuple[int, float], _Flusher] = {}
_flushers_lock = threading.Lock()


def _flusher(worker: Any, interval: float) -> _Flusher:
    key = (id(worker), interval)
    with _flushers_lock:
        flusher = _flushers.get(key)
        if flusher is None or flusher.worker is not worker:
            flusher = _flushers[key] = _Flusher(worker, interval)
        return flusher


class _Channel:
    """One job attempt's outgoing events on a worker: a buffer sent in numbered batches.

    Fed from the job's thread (and from threads the job started with a copy
    of its context); flushed from the worker's event loop. A lock guards the
    buffer and the sequence number; sending happens outside it, so two
    batches may leave out of order -- the client puts them back in order.
    """

    __slots__ = (
        "attempt", "buffer", "closed", "final", "flusher", "lock", "marked", "max_bytes",
        "max_events", "seq", "size", "topic", "worker",
    )

    def __init__(self, worker: Any, topic: str, interval: float, max_events: int,
                 max_bytes: int) -> None:
        self.worker = worker
        self.topic = topic
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.flusher = _flusher(worker, interval)
        self.attempt = _token()
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
                batch = [None, None, [blob]]
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
        batch = [self.attempt, self.seq, self.buffer]
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
            self.worker.log_event(self.topic, [attempt, seq, tail])


_channel: contextvars.ContextVar[_Channel | None] = contextvars.ContextVar(
    "iterflow_dask_channel", default=None
)


class _Relay:
    """What a job calls, on its worker, for each event: pickle it now, send it batched.

    Picklable and stateless -- the per-job state is the :class:`_Channel`
    that :func:`_run_job` puts in a context variable -- so it is right however
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
            distributed.get_worker().log_event(self.topic, [None, None, [blob]])

    def __reduce__(self) -> tuple:
        return (_Relay, (self.topic,))

    def __repr__(self) -> str:
        return f"<iterflow Dask event relay {self.topic}>"


class _Packed:
    """A value sent to the workers once for many jobs: pickled once, as one blob.

    distributed would serialize a big list or dict element by element (seconds
    for a list of 20,000 numbers); a blob travels at the speed of bytes. Each
    worker keeps the one box it received, and unpickles it once, for all the
    jobs that run there.
    """

    __slots__ = ("_data", "_value")

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self._value: Any = _Packed

    def value(self) -> Any:
        if self._value is _Packed:  # not unpickled yet (two threads may both do it: harmless)
            self._value = pickle.loads(self._data)
            self._data = None  # keep one copy; pickled again should another worker ask
        return self._value

    def __reduce__(self) -> tuple:
        data = self._data if self._data is not None else dumps(self._value)
        return (_Packed, (data,))

    def __sizeof__(self) -> int:  # what distributed's memory accounting sees
        return object.__sizeof__(self) + len(self._data or b"")


class _CancelProbe:
    """A remote job's cancel flag: has the client given up on this job?

    The runner's own flag (a ``threading.Event``) cannot cross processes.
    When a run is cancelled the client cancels its futures, and the worker
    marks a running task ``cancelled`` (its thread runs on: Python cannot
    stop a thread). The loop driver asks ``is_set()`` before each iteration;
    reading the worker's own state costs a dict lookup, no round trip, and
    lets a remote loop stop at its next iteration like an in-process one.
    """

    __slots__ = ("key", "worker")

    def __init__(self, worker: Any, key: str) -> None:
        self.worker = worker
        self.key = key

    def is_set(self) -> bool:
        task = self.worker.state.tasks.get(self.key)
        return task is None or task.state == "cancelled"


class _Call:
    """A job as it travels to a worker: an opaque box dask does not look into."""

    __slots__ = ("args", "events", "fn", "key", "push_limit", "shared", "topic")

    def __init__(self, fn: Callable[..., Any], args: tuple, key: str, topic: str,
                 push_limit: int, events: tuple | None, shared: tuple = ()) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.topic = topic
        self.push_limit = push_limit
        # (flush interval, max events, max bytes), or None: the run has no event sinks.
        self.events = events
        # Where the shared values go back into the spec: None for the run's
        # context, else the input's name (see DaskExecutor._share_values).
        self.shared = shared

    def __reduce__(self) -> tuple:
        return (_Call, (self.fn, self.args, self.key, self.topic, self.push_limit, self.events,
                        self.shared))


def _run_job(call: _Call, shared_values: list) -> tuple:
    """Run one job on a worker; publish its result and return it.

    ``shared_values`` are the values sent to the workers once for many jobs
    (distributed has turned their futures into the values); they go back
    where :meth:`DaskExecutor._share_values` took them from. A task run also
    gets a :class:`_CancelProbe` as its cancel flag.

    The result, the *payload*, is ``(attempt, batches sent, tail, how, data)``:
    ``attempt`` is None when the run has no event sinks (then there is no
    channel and no tail); ``how`` says what ``data`` is (``_PICKLED`` and
    friends). It is also the job's return value, which the client fetches
    when it was too big to publish, or when the message went missing.
    """
    worker = distributed.get_worker()
    args = call.args
    spec = args[0] if args else None
    if isinstance(spec, TaskRunSpec):
        changes: dict[str, Any] = {}
        for name, packed in zip(call.shared, shared_values):
            if name is None:
                changes["base_context"] = packed.value()
            else:
                changes.setdefault("inputs", dict(spec.inputs))[name] = packed.value()
        if getattr(spec, "cancel", False) is None:
            changes["cancel"] = _CancelProbe(worker, call.key)
        if changes:
            args = (replace(spec, **changes), *args[1:])
    channel = _Channel(worker, call.topic, *call.events) if call.events is not None else None
    token = _channel.set(channel)
    try:
        state = call.fn(*args)
    except BaseException:
        if channel is not None:
            channel.abort()
        raise
    finally:
        _channel.reset(token)
    attempt, sent, tail, how, data = None, 0, [], _PICKLED, None
    if channel is not None:
        attempt, sent, tail, is_last = channel.close(state)
        if is_last:
            how = _LAST_EVENT
    if how == _PICKLED:
        try:
            data = dumps(state)
        except Exception as exc:
            how = _UNPICKLABLE
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


# -- connecting ---------------------------------------------------------------------------------
def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout and asyncio's are TimeoutErrors
        return f"no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


async def _identity(address: str, timeout: float) -> Any:
    comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def _probe(address: str, timeout: float) -> Any:
    """The scheduler's ``identity`` reply, within ``timeout`` seconds.

    Runs on its own thread with its own event loop, so it works from any
    caller, one with a running event loop (a notebook) included.
    """
    box: dict[str, Any] = {}

    def ask() -> None:
        try:
            box["reply"] = asyncio.run(_identity(address, timeout))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=ask, name="iterflow-dask-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if "error" in box:
        raise box["error"]
    if "reply" not in box:
        raise TimeoutError
    return box["reply"]


@contextlib.contextmanager
def _quiet_in_this_thread(name: str) -> Iterator[None]:
    """Drop what logger ``name`` says from this thread (other threads still speak).

    distributed logs a traceback when a batch of jobs cannot be pickled; the
    executor then finds the jobs at fault and fails each with a clear message,
    so the traceback would only be noise.
    """
    here = threading.get_ident()

    def elsewhere(record: logging.LogRecord) -> bool:
        return record.thread != here

    target = logging.getLogger(name)
    target.addFilter(elsewhere)
    try:
        yield
    finally:
        target.removeFilter(elsewhere)


def _forget_topic(topic: str, dask_scheduler: Any = None) -> None:
    """Run on the scheduler: drop the run's topic, which keeps its recent messages."""
    broker = getattr(dask_scheduler, "_broker", None)
    topics = getattr(broker, "_topics", None)
    if topics is not None:
        topics.pop(topic, None)


def _dask_key(key: str | None, fn: Callable[..., Any], token: str) -> str:
    """A unique Dask key that distributed groups by task.

    The runner's keys are task run ids, ``<run id>/<task slug>[/<map index>]``.
    distributed groups keys by their leading words (``dask.utils.key_split``),
    for the dashboard, duration estimates and the queuing of large maps; so
    the slug goes first, and the run id gives way to ``token``, unique per
    job: ``accumulate-3-<token>``.
    """
    parts = (key or getattr(fn, "__name__", "job")).split("/")
    name = "-".join(parts[1:]) if len(parts) > 1 else parts[0]
    return f"{name}-{token}"



# -- the client side ------------------------------------------------------------------------------
class _Job:
    """A job as the runner holds it: hashable, and the Dask future once it is sent."""

    __slots__ = ("call", "error", "future", "key", "payload", "shared")

    def __init__(self, key: str, call: _Call, shared: list) -> None:
        self.key = key
        self.call: _Call | None = call
        self.shared = shared  # futures of the shared values the job needs
        self.future: Any = None
        self.payload: tuple | None = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        """Finished, one way or another (what the runner asks while cancelling)."""
        if self.error is not None or self.payload is not None:
            return True
        return self.future is not None and self.future.done()

    def __repr__(self) -> str:
        return f"<iterflow Dask job {self.key}>"


class DaskExecutor(Executor):
    """Run task runs on a Dask cluster; a looping task runs whole on one worker.

    With no ``address``, :meth:`start` starts a ``distributed.LocalCluster``
    for the run (``cluster_kwargs`` go to it, over these defaults: process
    workers, one per core, one thread each, no dashboard, quiet logs) and
    closes it after. With ``address``, it joins the scheduler there and
    leaves it running; an unreachable address raises
    :class:`~iterflow.errors.ExecutorError` within ``connect_timeout``
    seconds. ``client=`` uses an existing ``distributed.Client`` as it is.

    Tasks, their inputs and results travel with cloudpickle; a lost worker
    does not lose the run. See the module docstring for how it works.

    >>> from iterflow.executors import DaskExecutor
    >>> flow.run(executor=DaskExecutor(n_workers=4))                     # doctest: +SKIP
    >>> flow.run(executor=DaskExecutor("tcp://scheduler:8786"))          # doctest: +SKIP
    """

    #: Jobs run in other processes and may be rerun elsewhere after a lost worker.
    remote = True

    #: Seconds a worker may hold a job's events before sending them.
    event_interval: float = 0.05
    #: A job's events are sent at once when this many are waiting ...
    event_batch: int = 1000
    #: ... or when they weigh this many bytes.
    event_bytes: int = 256 * 1024
    #: Seconds ``result()`` waits for a job's events still in transit.
    event_grace: float = 10.0
    #: Results up to this many bytes (pickled) are pushed to the client with the
    #: news that the job is done; bigger ones are fetched from the worker.
    push_limit: int = 64 * 1024
    #: A job's inputs and its run's context (the parameters among them) at least
    #: this big (``dask.sizeof``) are sent to every worker once, not with each job.
    share_limit: int = 16 * 1024
    #: Most jobs sent to the scheduler in one message.
    submit_batch: int = 5000
    #: Seconds between looks at the futures' status for jobs that ended without
    #: their result message (an error outside the task run, a job given up after
    #: its workers kept dying); and the look comes sooner when nothing at all has
    #: arrived for :attr:`idle_interval` seconds.
    status_interval: float = 5.0
    idle_interval: float = 0.5
    #: Futures of finished jobs are let go in batches of this many (see _release).
    release_batch: int = 1000

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        connect_timeout: float = 5.0,
        **cluster_kwargs: Any,
    ) -> None:
        if address is not None and client is not None:
            raise ValueError("DaskExecutor: pass address= or client=, not both")
        if cluster_kwargs and (address is not None or client is not None):
            raise ValueError(
                f"DaskExecutor: {', '.join(sorted(cluster_kwargs))} configure a local cluster "
                f"and cannot be used with address= or client=, which join an existing one"
            )
        self.address = address
        self.client = client
        self.connect_timeout = connect_timeout
        self.cluster_kwargs = cluster_kwargs
        self._reset(None, None)

    def _reset(self, client: Any, topic: str | None) -> None:
        self._client = client
        self._topic = topic
        self._emit: Callable[[Any], None] | None = None
        self._events: tuple | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[_Job] = []  # submitted, not sent yet
        self._inflight: dict[str, _Job] = {}  # sent, not known to be done
        self._done: set[_Job] = set()  # done, not yet returned by wait()
        self._streams: dict[str, list] = {}  # attempt -> [next sequence number, held batches]
        self._abandoned: set[str] = set()
        # task_run_id -> what a sink raised on one of its events (see _emit_one)
        self._sink_errors: dict[str, Exception] = {}
        self._next_look = 0.0
        self._released: list[Any] = []  # futures of finished jobs, to let go in a batch
        # id(value) -> (value, its future or None when small); kept for the run
        self._shared: dict[int, tuple[Any, Any]] = {}

    # -- life cycle ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def start(self) -> Iterator[DaskExecutor]:
        """Connect (or start a local cluster) for one flow run; disconnect after."""
        if self._client is not None:
            raise RuntimeError(f"{self!r} is already running a flow; use one executor per run")
        client, cluster = self._connect()
        topic = f"iterflow-{uuid.uuid4().hex}"
        self._reset(client, topic)
        inbox = self._inbox
        # Runs on the client's event-loop thread: only hand the message over.
        client.subscribe_topic(topic, lambda event: inbox.put(event[1]))
        finished = False
        try:
            yield self
            finished = True
        finally:
            self._stop(client, cluster, topic, finished)

    def _connect(self) -> tuple[Any, Any]:
        if self.client is not None:
            return self.client, None
        if self.address is not None:
            return self._join(self.address), None
        kwargs = {
            "processes": True,
            "n_workers": os.cpu_count() or 2,
            "threads_per_worker": 1,
            "dashboard_address": None,
            "silence_logs": logging.ERROR,
            **self.cluster_kwargs,
        }
        try:
            cluster = distributed.LocalCluster(**kwargs)
        except Exception as exc:
            raise ExecutorError(
                f"DaskExecutor could not start a local Dask cluster with {kwargs!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    def _join(self, address: str) -> Any:
        def unreachable(why: str) -> ExecutorError:
            return ExecutorError(
                f"DaskExecutor could not reach a Dask scheduler at {address!r} ({why}). "
                f"Check that a scheduler is running there (start one with `dask scheduler`) "
                f"and that the address is right, e.g. 'tcp://10.0.0.5:8786'; or use "
                f"DaskExecutor() without an address to start a local cluster."
            )

        try:
            scheme, location = parse_address(address)
            if scheme == "tcp":
                host, port = parse_host_port(location, default_port=8786)
        except (ValueError, TypeError) as exc:
            raise unreachable(f"not a valid address: {exc}") from exc
        if scheme == "tcp":
            # A refused or unresolvable address fails here at once; distributed
            # itself would keep retrying until its timeout.
            try:
                with socket.create_connection((host, port), timeout=self.connect_timeout):
                    pass
            except OSError as exc:
                raise unreachable(_why(exc, self.connect_timeout)) from exc
        # distributed's connect timeout does not cover a peer that accepts the
        # connection and then says nothing (the Client would wait forever): ask
        # the scheduler who it is, with a deadline, before building a Client.
        try:
            identity = _probe(address, self.connect_timeout)
        except Exception as exc:
            raise unreachable(_why(exc, self.connect_timeout)) from exc
        if not isinstance(identity, dict) or identity.get("type") != "Scheduler":
            raise unreachable(f"the server there is not a Dask scheduler: {identity!r:.200}")
        try:
            return distributed.Client(address, timeout=self.connect_timeout, set_as_default=False)
        except Exception as exc:
            raise unreachable(_why(exc, self.connect_timeout)) from exc

    def _stop(self, client: Any, cluster: Any, topic: str, finished: bool) -> None:
        try:
            if finished:
                self._drain(block=False)  # events that arrived after the last result
            self._let_go()
            leftover = [job.future for job in self._inflight.values() if job.future is not None]
            if leftover:
                with contextlib.suppress(Exception):
                    client.cancel(leftover)
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
            if cluster is None:
                # A scheduler we do not own outlives the run: do not leave the
                # run's recent messages in its memory. (Private API, best effort.)
                with contextlib.suppress(Exception):
                    client.run_on_scheduler(_forget_topic, topic)
        finally:
            self._reset(None, None)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    client.close()
                cluster.close()
            elif self.client is None:
                with contextlib.suppress(Exception):
                    client.close()

    # -- the executor contract ----------------------------------------------------------------
    def event_relay(self, emit: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        """A picklable relay that jobs call on workers; events reach ``emit`` here."""
        if self._topic is None:
            raise RuntimeError("DaskExecutor.event_relay() called outside executor.start()")
        self._emit = emit
        if emit is None:
            self._events = None
            return None
        self._events = (self.event_interval, self.event_batch, self.event_bytes)
        return _Relay(self._topic)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> _Job:
        """Queue ``fn(*args)``; it is sent with the other queued jobs at the next ``wait()``."""
        if self._client is None:
            raise RuntimeError("DaskExecutor.submit() called outside executor.start()")
        dask_key = _dask_key(key, fn, _token())
        args, names, futures = self._share_values(args)
        call = _Call(fn, args, dask_key, self._topic, self.push_limit, self._events, names)
        job = _Job(dask_key, call, futures)
        self._pending.append(job)
        if len(self._pending) >= self.submit_batch:
            self._send_pending()
        return job

    def wait(self, futures: Iterable[_Job]) -> tuple[set[_Job], set[_Job]]:
        """Send queued jobs, then deliver events until at least one job is done."""
        jobs = set(futures)
        if not jobs:
            return set(), set()
        self._send_pending()
        self._drain(block=False)
        ready = self._done & jobs
        while not ready:
            idle = not self._drain(block=True)
            if idle:
                self._let_go()
            self._look_for_failures(idle)
            ready = self._done & jobs
        self._done -= ready
        self._fetch(ready)
        jobs -= ready  # ours to change: what is left is the jobs not done
        return ready, jobs

    def result(self, future: _Job) -> Any:
        """The job's final state, after delivering every event it emitted."""
        job = future
        if job.error is not None:
            raise job.error
        payload, future = job.payload, job.future
        job.future = job.payload = None
        if payload is None:
            payload = future.result()  # raises what ended the job (e.g. KilledWorker)
        else:
            self._release(future)
        attempt, sent, tail, how, data = payload
        if attempt is not None:
            self._catch_up(attempt, sent)
            if how == _LAST_EVENT:
                self._deliver(tail[:-1])
                return self._emit_final(self._sink_failed(self._loads(tail[-1])))
            self._deliver(tail)
        if how == _UNPICKLABLE:
            raise SerializationError(data)
        return self._loads(data)

    def cancel(self, futures: Iterable[_Job]) -> None:
        """Drop queued jobs and cancel sent ones (a running job finishes on its worker)."""
        jobs = set(futures)
        self._pending = [job for job in self._pending if job not in jobs]
        sent = []
        for job in jobs:
            self._inflight.pop(job.key, None)
            if job.future is not None:
                sent.append(job.future)
        if sent and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.cancel(sent)

    # -- sending ------------------------------------------------------------------------------
    def _share_values(self, args: tuple) -> tuple[tuple, tuple, list]:
        """Take big values out of a task run's spec, to send them to the workers once.

        The runner gives every spec of a run the same context dict -- the
        run's parameters included -- and every child of a mapped task the
        same ``unmapped(...)`` values. distributed pickles each job on its
        own, so a value inside N specs would travel N times through the
        scheduler: a 10,000-item parameter mapped over 10,000 children is
        10^8 items. A value at least :attr:`share_limit` big is scattered to
        every worker once instead (``broadcast=True``, so it does not pull
        every job towards one worker) and the job depends on its future.
        Returns the args to send, where each value goes back, and the futures.
        """
        spec = args[0] if args else None
        if not isinstance(spec, TaskRunSpec):
            return args, (), []
        names: list[str | None] = []
        futures: list[Any] = []
        future = self._share(spec.base_context, "the run's context (its parameters)",
                             remember=True)
        if future is not None:
            names.append(None)
            futures.append(future)
        inputs = None
        for name, value in spec.inputs.items():
            if type(value) in _SMALL:
                continue
            future = self._share(value, f"its input {name!r}")
            if future is not None:
                if inputs is None:
                    inputs = dict(spec.inputs)
                inputs[name] = None
                names.append(name)
                futures.append(future)
        if not futures:
            return args, (), []
        slim = replace(
            spec,
            base_context=None if names[0] is None else spec.base_context,
            inputs=inputs if inputs is not None else spec.inputs,
        )
        return (slim, *args[1:]), tuple(names), futures

    def _share(self, value: Any, what: str, remember: bool = False) -> Any:
        """The future of ``value`` scattered to the workers, or None when it is small.

        Big values are remembered for the run, and small ones when asked
        (the context, which every job of the run carries).
        """
        known = self._shared.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        try:
            big = sizeof(value) >= self.share_limit
        except Exception:  # a broken __sizeof__: send the value with the job
            big = False
        future = None
        if big:
            try:
                packed = _Packed(dumps(value))
            except Exception as exc:
                cause = _root_cause(exc)
                raise SerializationError(
                    f"{what}, a {type_name(value)}, cannot be pickled to send it to the Dask "
                    f"cluster ({type(cause).__name__}: {cause}); make it picklable (with "
                    f"cloudpickle), or run the flow on LocalExecutor or ThreadExecutor"
                ) from exc
            future = self._client.scatter([packed], broadcast=True, hash=False)[0]
        if big or remember:
            self._shared[id(value)] = (value, future)
        return future

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.submit_batch):
            self._send(pending[start : start + self.submit_batch])

    def _send(self, jobs: list[_Job]) -> None:
        try:
            with _quiet_in_this_thread("distributed.protocol.pickle"):
                futures = self._client.map(
                    _run_job,
                    [job.call for job in jobs],
                    [job.shared for job in jobs],
                    key=[job.key for job in jobs],
                    pure=False,
                )
        except Exception as exc:
            self._send_separately(jobs, exc)
            return
        inflight = self._inflight
        for job, future in zip(jobs, futures):
            job.future = future
            job.call = None
            job.shared = []
            inflight[job.key] = job

    def _send_separately(self, jobs: list[_Job], batch_error: Exception) -> None:
        """A batch failed to send: fail the jobs that cannot be pickled, send the rest."""
        sendable = []
        for job in jobs:
            try:
                cloudpickle.dumps(job.call, protocol=_PROTOCOL)
            except Exception as exc:
                cause = _root_cause(exc)
                self._fail_unsent(job, SerializationError(
                    f"it cannot be pickled to send it to the Dask cluster "
                    f"({type(cause).__name__}: {cause}). A task run travels with the task's "
                    f"function, the globals and closures it uses, and its inputs, which must "
                    f"all be picklable with cloudpickle: create unpicklable objects (locks, "
                    f"open files, connections) inside the task, or run the flow on "
                    f"LocalExecutor or ThreadExecutor"
                ))
            else:
                sendable.append(job)
        if len(sendable) == len(jobs):  # not a pickling problem after all
            cause = _root_cause(batch_error)
            for job in jobs:
                self._fail_unsent(job, ExecutorError(
                    f"it could not be sent to the Dask scheduler: {type(cause).__name__}: {cause}"
                ))
        elif sendable:
            self._send(sendable)

    def _fail_unsent(self, job: _Job, error: BaseException) -> None:
        job.error = error
        job.call = None
        self._done.add(job)

    # -- receiving ----------------------------------------------------------------------------
    def _drain(self, block: bool) -> bool:
        """Handle the messages that arrived: results and event batches. Any?"""
        inbox = self._inbox
        try:
            # A bounded wait keeps Ctrl-C and the status look responsive.
            item = inbox.get(timeout=self.idle_interval) if block else inbox.get_nowait()
        except queue.Empty:
            return False
        while True:
            if len(item) == 3:
                self._on_batch(item)
            else:
                self._on_result(item)
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                return True

    def _release(self, future: Any) -> None:
        """Let go of a finished job's future -- soon, and together with others.

        Dropping a distributed future schedules a message on the client's event
        loop, a wake-up of that thread which, in this thread, costs more than
        the rest of the job's handling (the loop thread, busy scheduling, holds
        the GIL). So futures of finished jobs are dropped in batches, by the
        loop thread itself. Only small, pushed results wait in workers' memory
        meanwhile; a fetched result's future is dropped at once.
        """
        if future is None:
            return
        released = self._released
        released.append(future)
        if len(released) >= self.release_batch:
            self._let_go()

    def _let_go(self) -> None:
        if self._released and self._client is not None:
            batch, self._released = self._released, []
            self._client.loop.add_callback(batch.clear)

    def _on_result(self, message: list) -> None:
        job = self._inflight.pop(message[0], None)
        if job is None:
            return  # a rerun's second result, or a job cancelled or found failed before
        if len(message) > 1:
            job.payload = tuple(message[1:])
        self._done.add(job)

    def _look_for_failures(self, idle: bool) -> None:
        """Find jobs that ended without their result message.

        Every :attr:`status_interval` seconds, or when nothing has arrived for
        a while (``idle``): this reads every running job's status.
        """
        now = time.monotonic()
        if not idle and now < self._next_look:
            return
        self._next_look = now + self.status_interval
        self._drain(block=False)  # so that a result already here is not taken for missing
        for key, job in list(self._inflight.items()):
            status = job.future.status
            # "finished" with no message: the message went missing; fetch the result.
            if status in _ENDED_BADLY or status == "finished":
                del self._inflight[key]
                self._done.add(job)

    def _on_batch(self, batch: list) -> None:
        attempt, seq, blobs = batch
        if seq is None:
            self._deliver(blobs)
            return
        if attempt in self._abandoned:
            logger.warning("%d event(s) of a Dask job arrived too late to record", len(blobs))
            return
        stream = self._streams.get(attempt)
        if stream is None:
            stream = self._streams[attempt] = [0, {}]
        held = stream[1]
        if seq != stream[0]:
            held[seq] = blobs
            return
        self._deliver(blobs)
        seq += 1
        while seq in held:
            self._deliver(held.pop(seq))
            seq += 1
        stream[0] = seq

    def _catch_up(self, attempt: str, sent: int) -> None:
        """Deliver the attempt's ``sent`` batches before its tail, waiting if they lag."""
        if sent:
            self._drain(block=False)
        deadline = None
        while self._streams.get(attempt, (0,))[0] < sent:
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.event_grace
            elif now >= deadline:
                stream = self._streams.get(attempt, [0, {}])
                logger.warning(
                    "%d event batch(es) of a Dask job did not arrive within %g s; "
                    "going on without them",
                    sent - stream[0] - len(stream[1]), self.event_grace,
                )
                for seq in sorted(stream[1]):
                    self._deliver(stream[1][seq])
                self._abandoned.add(attempt)
                break
            self._drain(block=True)
        self._streams.pop(attempt, None)

    def _deliver(self, blobs: list[bytes]) -> None:
        for blob in blobs:
            try:
                event = pickle.loads(blob)
            except Exception as exc:
                logger.error("an event from a Dask worker cannot be unpickled here: %r", exc)
                continue
            self._emit_one(event)

    def _emit_one(self, event: Any) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception as exc:
            # The job has moved on on its worker, so the sink's error (a loop result
            # the store cannot serialize, a full disk) cannot stop it there; it fails
            # the task run when its final state arrives (_sink_failed), as it would
            # in-process. Later events of the task run are still offered to the sinks.
            if type(event) is TaskRunEvent and not event.state.is_finished():
                self._sink_errors.setdefault(event.task_run_id, exc)
            else:
                logger.exception("an event sink failed on %r", event)

    def _emit_final(self, final: TaskRunEvent) -> Any:
        """Hand a task run's final event to the sinks; return the state it ends in.

        A sink that cannot take it (a result it cannot record) fails the task
        run, which is recorded in its place, as in-process.
        """
        if self._emit is not None:
            try:
                self._emit(final)
            except Exception as exc:
                state = final.state
                final = final._replace(state=Failed(str(exc), exc, loop_count=state.loop_count))
                self._emit_one(final)
        return final.state

    def _sink_failed(self, final: TaskRunEvent) -> TaskRunEvent:
        """``final``, or a Failed one in its place if a sink failed on the task run's events."""
        error = self._sink_errors.pop(final.task_run_id, None)
        if error is None or final.state.is_failed():
            return final
        return final._replace(state=Failed(str(error), error, loop_count=final.state.loop_count))

    def _fetch(self, ready: set[_Job]) -> None:
        """Fetch the results that were not pushed, all in one round trip."""
        jobs = [
            job for job in ready
            if job.payload is None and job.future is not None and job.future.status == "finished"
        ]
        if not jobs:
            return
        try:
            payloads = self._client.gather([job.future for job in jobs])
        except Exception:
            return  # result() fetches them one by one and reports each job's own error
        for job, payload in zip(jobs, payloads):
            job.payload = payload

    def _loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(
                f"its final state came back from the Dask worker but cannot be unpickled "
                f"here ({type(exc).__name__}: {exc}); the modules and classes a task returns "
                f"must be importable where the flow runs"
            ) from exc

    def __repr__(self) -> str:
        if self.address is not None:
            return f"DaskExecutor(address={self.address!r})"
        if self.client is not None:
            where = getattr(getattr(self.client, "scheduler", None), "address", None)
            return f"DaskExecutor(address={where!r})" if where else "DaskExecutor(client=...)"
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.cluster_kwargs.items())
        return f"DaskExecutor({kwargs})"
