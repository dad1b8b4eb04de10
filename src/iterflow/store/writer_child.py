"""The store's writer process: commits the batches its parent's writer threads send.

Started by :mod:`iterflow.store.writer_process` as ``python -c`` with a
connected socket's file descriptor and the parent's pid. It answers one
request at a time (length-prefixed pickles, see :class:`Channel`):

``("adopt", url, name, lock_timeout, file_id, state)``, on the control socket
    with a socket of the sink's own passed along: take over the sink's
    :class:`~iterflow.store.batch.BatchRecorder` from its
    :meth:`~iterflow.store.batch.BatchRecorder.state`;
``("commit", batch, n_ids, metrics)``, on the sink's socket
    commit a batch as that recorder; the answer carries the runs someone asked
    to cancel, the runs still open and the heartbeat's schedule. Once a batch
    failed, every later one of the sink gets the same error.

Every answer is ``("ok", ...)`` or ``("error", exception)``; the sink's
socket closing forgets its recorder. Rows name the
parent as the process driving the runs (:func:`~iterflow.store.liveness.write_for`).
The process ends when the socket closes — its parent ended, even by SIGKILL —
or when its parent is gone; it has its own session, so a Ctrl-C at the
terminal reaches only the parent, which still has its last batch to send.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import socket
import struct
import sys
from collections import OrderedDict
from typing import Any

__all__ = ["Channel", "main", "portable"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
_LENGTH = struct.Struct("<Q")
#: SQLite connections kept open, by store file (a process writes few stores at once).
_KEEP_CONNECTIONS = 4


class Channel:
    """Length-prefixed messages over a connected socket, both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, PROTOCOL)
        self.sock.sendall(_LENGTH.pack(len(data)) + data)

    def receive(self) -> Any:
        (size,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        return pickle.loads(self._exactly(size))

    def ready(self, timeout: float) -> bool:
        """Whether a message (or the end) can be read within ``timeout`` seconds."""
        # poll, not select: a process with over 1,024 files open has descriptors
        # that select cannot watch.
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def _exactly(self, size: int) -> bytearray:
        data = bytearray(size)
        view = memoryview(data)
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if not n:
                raise EOFError("the other end of the writer's socket closed")
            got += n
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a StoreError that says what it was."""
    from iterflow.errors import StoreError

    try:
        return pickle.loads(pickle.dumps(exc, PROTOCOL))  # type: ignore[no-any-return]
    except Exception:
        return StoreError(f"The run store's writer process failed: {type(exc).__name__}: {exc}")


class _Stores:
    """The engines and kept connections of the store files this process writes."""

    def __init__(self) -> None:
        # (url, file id) -> (engine, connection or None); least recently used first.
        self._open: OrderedDict[tuple[str, Any], list[Any]] = OrderedDict()

    def writer(self, url: str, name: str, lock_timeout: float, file_id: Any) -> Any:
        """``write(transaction)`` for the store at ``url``, on a connection kept open."""
        from iterflow.store import db

        key = (url, file_id)
        entry = self._open.get(key)
        if entry is None:
            entry = [db.create_engine(url, lock_timeout=lock_timeout, pooled=False), None]
            self._open[key] = entry
            while len(self._open) > _KEEP_CONNECTIONS:
                _, (engine, conn) = self._open.popitem(last=False)
                _close(engine, conn)
        self._open.move_to_end(key)
        engine = entry[0]

        def write(transaction: Any) -> None:
            if entry[1] is None:
                entry[1] = db.write_connection(engine)
            try:
                db.write(engine, transaction, name=name, lock_timeout=lock_timeout,
                         connection=entry[1])
            except BaseException:
                conn, entry[1] = entry[1], None  # the next attempt starts afresh
                with contextlib.suppress(Exception):
                    conn.close()
                raise

        return write

    def close(self) -> None:
        for engine, conn in self._open.values():
            _close(engine, conn)
        self._open.clear()


def _close(engine: Any, conn: Any) -> None:
    with contextlib.suppress(Exception):
        if conn is not None:
            conn.close()
        engine.dispose()


def serve(control: Channel, parent: int) -> None:
    """Answer requests until the control socket closes or the parent is gone.

    The control socket carries ``adopt``: each adopted sink comes with a
    socket of its own (passed with the request), on which its commits go
    and their answers come back in order — so a sink can send its next batch
    before the answer to the last one, and sinks never wait for each other's
    answers. A sink's socket closing forgets its recorder.
    """
    from iterflow.store.batch import BatchRecorder
    from iterflow.store.liveness import write_for

    write_for(parent)
    stores = _Stores()
    sinks: dict[int, _Sink] = {}  # by their socket's descriptor
    control.send(("ready", os.getpid()))
    poller = select.poll()
    poller.register(control.sock, select.POLLIN)
    control_fd = control.sock.fileno()
    try:
        while True:
            readable = [fd for fd, _ in poller.poll(1000)]
            if not readable and os.getppid() != parent:
                return
            for fd in readable:
                if fd != control_fd:
                    sink = sinks[fd]
                    if not sink.answer():
                        poller.unregister(fd)
                        del sinks[fd]
                        sink.channel.close()
                    continue
                try:
                    message = control.receive()
                    _, fds, _, _ = socket.recv_fds(control.sock, 1, 1)
                except (EOFError, OSError):
                    return  # the parent ended
                _, url, name, lock_timeout, file_id, state = message
                channel = Channel(socket.socket(fileno=fds[0]))
                try:
                    write = stores.writer(url, name, lock_timeout, file_id)
                    recorder = BatchRecorder.adopt(write, state)
                except BaseException as exc:
                    control.send(("error", portable(exc)))
                    channel.close()
                    continue
                sinks[fds[0]] = _Sink(channel, recorder)
                poller.register(fds[0], select.POLLIN)
                control.send(("ok",))
    finally:
        for sink in sinks.values():
            sink.channel.close()
        stores.close()


class _Sink:
    """One adopted sink: its socket and its recorder."""

    def __init__(self, channel: Channel, recorder: Any) -> None:
        self.channel = channel
        self.recorder = recorder
        self.failed: BaseException | None = None

    def answer(self) -> bool:
        """Commit the batch waiting on the socket and answer; False once it closed."""
        # No cyclic GC while a batch is read and written: its records and rows
        # (thousands of tuples, no cycles) all live until it is committed, and
        # the collector would walk them again every 700 allocations, in vain.
        # This process is the store's alone: nothing else waits for a collection.
        gc.disable()
        try:
            return self._answer()
        finally:
            gc.enable()

    def _answer(self) -> bool:
        try:
            _, batch, n_ids, metrics = self.channel.receive()
        except (EOFError, OSError):
            return False
        recorder = self.recorder
        try:
            if self.failed is not None:
                raise self.failed  # after a failed batch, nothing more of this sink
            cancels: list[str] = []
            recorder.on_cancels = cancels.extend
            recorder.commit(batch, n_ids, metrics)
            reply: tuple[Any, ...] = (
                "ok", cancels, list(recorder.open_runs), recorder._next_beat,
            )
        except BaseException as exc:  # the parent decides what a failure means
            self.failed = self.failed or portable(exc)
            reply = ("error", self.failed)
        try:
            self.channel.send(reply)
        except OSError:
            return False
        return True


def main() -> None:
    """Entry point: ``argv`` holds the socket's file descriptor and the parent's pid."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    channel = Channel(socket.socket(fileno=fd))
    try:
        serve(channel, parent)
    except (EOFError, OSError):
        pass  # the parent went away while an answer was on its way
    finally:
        channel.close()
