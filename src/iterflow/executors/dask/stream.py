"""The client's end of a run's event stream: messages in, events to the sinks in order.

Each run has a topic. Workers publish to it with ``Worker.log_event``; the
client subscribes with ``Client.subscribe_topic``. Messages go through the
worker's batched stream to the scheduler, which forwards them to the client:
no round trip, ordered per worker, and only distributed's own machinery.
(The ``Pub``/``Sub`` API is gone from distributed.) The client's handler runs
on distributed's event-loop thread and only queues the message
(:meth:`EventStream.receive`); the runner's thread handles it in the
executor's ``wait()`` -- which keeps handling messages while it blocks, so a
long loop is visible while it runs -- and in ``result()``. Two kinds of
message travel on it: event batches ``[job key, attempt, seq, blobs]`` and
results ``[job key, *payload]`` (see :mod:`iterflow.executors.dask.worker`).

Ordering
    The stream delivers an attempt's batches in sequence, whatever order they
    arrive in. A job's last events travel inside its result, with the number
    of batches sent before them; the executor's ``result()`` first makes sure
    those batches are delivered (:meth:`EventStream.catch_up`: waiting,
    normally not at all, at most ``event_grace`` seconds), then delivers the
    tail, then returns the state. So a task run's final state reaches the
    sinks before the runner acts on it, and never after the flow's final
    state.

One history per task run
    Once the executor has taken a job's result (or given up on the job), the
    stream *closes* its key: what arrives for it later is dropped. Such
    events come from an attempt that distributed started after the job had
    ended -- a finished job whose result was lost with its worker, recomputed
    elsewhere -- and would give a recorded final state a later ``Running``.

Sink errors
    A sink may refuse an event (a loop result the store cannot serialize, a
    full disk). The job has moved on on its worker, so that cannot stop it
    there; the task run fails when its final state arrives
    (:meth:`EventStream.final`), as it would in-process.
"""

from __future__ import annotations

import logging
import pickle
import queue
import time
from collections.abc import Callable
from typing import Any

from iterflow.core.state import Failed
from iterflow.events import TaskRunEvent

__all__ = ["EventStream"]

logger = logging.getLogger("iterflow.executors.dask")


class EventStream:
    """Messages of one run's topic, turned into events for ``emit``, in order.

    ``on_result(message)`` is called, on the runner's thread, for each result
    message; event batches are delivered here.
    """

    def __init__(self, emit: Callable[[Any], None] | None,
                 on_result: Callable[[list], None], grace: float, idle: float) -> None:
        self.emit = emit
        self.on_result = on_result
        self.grace = grace
        self.idle = idle
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.streams: dict[str, list] = {}  # attempt -> [next sequence number, held batches]
        self.abandoned: set[str] = set()
        self.started: set[str] = set()  # keys of jobs that sent events, not closed yet
        self.closed: set[str] = set()  # keys of jobs whose history is complete
        # task_run_id -> what a sink raised on one of its events (see emit_one)
        self.sink_errors: dict[str, Exception] = {}

    def receive(self, event: tuple) -> None:
        """The topic's handler, on distributed's event-loop thread: only queue the message."""
        self.inbox.put(event[1])

    def drain(self, block: bool) -> bool:
        """Handle the messages that arrived: results and event batches. Any?"""
        inbox = self.inbox
        try:
            # A bounded wait keeps Ctrl-C and the executor's status look responsive.
            item = inbox.get(timeout=self.idle) if block else inbox.get_nowait()
        except queue.Empty:
            return False
        while True:
            if len(item) == 4:
                self.on_batch(item)
            else:
                self.on_result(item)
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                return True

    def close(self, key: str) -> None:
        """The job's history is complete: drop what still comes for it."""
        self.closed.add(key)
        self.started.discard(key)

    def on_batch(self, batch: list) -> None:
        key, attempt, seq, blobs = batch
        if key is not None:
            if key in self.closed:
                logger.info("dropped %d event(s) of Dask job %s, which has ended", len(blobs), key)
                return
            self.started.add(key)
        if seq is None:
            self.deliver(blobs)
            return
        if attempt in self.abandoned:
            logger.warning("%d event(s) of a Dask job arrived too late to record", len(blobs))
            return
        stream = self.streams.get(attempt)
        if stream is None:
            stream = self.streams[attempt] = [0, {}]
        held = stream[1]
        if seq != stream[0]:
            held[seq] = blobs
            return
        self.deliver(blobs)
        seq += 1
        while seq in held:
            self.deliver(held.pop(seq))
            seq += 1
        stream[0] = seq

    def catch_up(self, attempt: str, sent: int) -> None:
        """Deliver the attempt's ``sent`` batches before its tail, waiting if they lag."""
        if sent:
            self.drain(block=False)
        deadline = None
        while self.streams.get(attempt, (0,))[0] < sent:
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.grace
            elif now >= deadline:
                stream = self.streams.get(attempt, [0, {}])
                logger.warning(
                    "%d event batch(es) of a Dask job did not arrive within %g s; "
                    "going on without them",
                    sent - stream[0] - len(stream[1]), self.grace,
                )
                for seq in sorted(stream[1]):
                    self.deliver(stream[1][seq])
                self.abandoned.add(attempt)
                break
            self.drain(block=True)
        self.streams.pop(attempt, None)

    def deliver(self, blobs: list[bytes]) -> None:
        for blob in blobs:
            try:
                event = pickle.loads(blob)
            except Exception as exc:
                logger.error("an event from a Dask worker cannot be unpickled here: %r", exc)
                continue
            self.emit_one(event)

    def emit_one(self, event: Any) -> None:
        if self.emit is None:
            return
        try:
            self.emit(event)
        except Exception as exc:
            # Later events of the task run are still offered to the sinks; the error
            # fails the task run when its final state arrives (see the module docstring).
            if type(event) is TaskRunEvent and not event.state.is_finished():
                self.sink_errors.setdefault(event.task_run_id, exc)
            else:
                logger.exception("an event sink failed on %r", event)

    def final(self, blob: bytes, loads: Callable[[bytes], Any]) -> Any:
        """Deliver a task run's final event (its pickled ``blob``); return its state.

        A sink that refused an earlier event of the task run, or that cannot
        take this one (a result it cannot record), fails the task run, which
        is recorded in its place, as in-process.
        """
        final: TaskRunEvent = loads(blob)
        error = self.sink_errors.pop(final.task_run_id, None)
        if error is not None and not final.state.is_failed():
            state = final.state
            final = final._replace(state=Failed(str(error), error, loop_count=state.loop_count))
        if self.emit is not None:
            try:
                self.emit(final)
            except Exception as exc:
                state = final.state
                final = final._replace(state=Failed(str(exc), exc, loop_count=state.loop_count))
                self.emit_one(final)
        return final.state
