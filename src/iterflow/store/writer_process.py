"""Hand a busy sink's batches to a writer process, out of the GIL's way.

A sink's writer thread builds and binds every row in Python, holding the GIL
the task's thread needs, and each statement then waits to get it back: behind
a fast loop the two threads take turns instead of running side by side. A
process has a GIL of its own. So once a sink on a SQLite file has committed
:data:`HAND_OVER_AFTER` records — or :data:`HAND_OVER_STREAMING`, when its
producers hardly ever wait for a commit (a loop, a map: see
:meth:`HandOver.wants`) — its writer thread starts the store's writer
process (:mod:`iterflow.store.writer_child`, spawned in the background: its
imports take a few hundred ms of the other core), goes on committing itself
meanwhile, and at the first batch after the process is ready hands it its
:class:`~iterflow.store.batch.BatchRecorder` — keys, runs created, heartbeat —
and from then on only drains, pickles and sends: :class:`RemoteBatches`.
The process stays for later sinks, which hand over once they too have
committed as many records: a short run never pays a round trip per batch.

Nothing the writer promises changes: a batch is still one transaction, and
the thread wakes whoever waits for a batch only once the process answered
that it is committed (it may send the next batch before that answer), so a
flush, a ``checkpoint="every"`` iteration and a run's first state still wait
for their commit. Rows name this
process as the one driving the runs. If the writer process dies, the sink
fails as it does when its database fails: what it had not committed is lost,
and the run is resumable.

``ITERFLOW_WRITER`` picks: ``auto`` (the default, as above), ``thread`` (never
hand over) or ``process`` (hand over from the first batch; the process is
started with the first sink and waited for).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iterflow.errors import StoreError
from iterflow.store.cancel_watch import asked
from iterflow.store.writer_child import Channel

if TYPE_CHECKING:
    from iterflow.store.batch import BatchRecorder, Taken
    from iterflow.store.runstore import RunStore

__all__ = ["HAND_OVER_AFTER", "HandOver", "RemoteBatches", "WriterProcess", "hand_over_policy"]

#: Records a sink commits itself before it asks for the writer process (``auto``).
HAND_OVER_AFTER = int(os.environ.get("ITERFLOW_WRITER_PROCESS_AFTER", "8192"))
#: ... or fewer, when its producers wait for at most one commit per
#: :data:`RECORDS_PER_WAIT` records: behind a loop the writer thread is the
#: bottleneck from the start, while a sink whose runs wait for their commits
#: (subflows: two per child run) would pay a round trip to the process each time.
HAND_OVER_STREAMING = 2048
RECORDS_PER_WAIT = 256
#: How long a sink that must hand over (``process``) waits for the process to start.
_START_TIMEOUT = 60.0

_lock = threading.Lock()
_process: WriterProcess | None = None
_broken = False  # the process could not be started, or died: this process writes itself


def _mode() -> str:
    mode = os.environ.get("ITERFLOW_WRITER", "auto")
    if mode not in ("auto", "thread", "process"):
        raise StoreError(
            f"ITERFLOW_WRITER is {mode!r}: it must be 'auto' (a long run's batches go to "
            f"a writer process), 'thread' (never) or 'process' (always). Fix or unset it."
        )
    return mode


class WriterProcess:
    """The writer process of this process: started once, shared by its sinks.

    Its control socket takes :meth:`adopt` requests, one at a time; each sink
    it adopts then talks to it on a socket of its own (:class:`RemoteBatches`).
    """

    def __init__(self) -> None:
        self.parent = os.getpid()
        ours, theirs = socket.socketpair()
        # The child imports iterflow from where this process did, whatever its sys.path.
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p
        )
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-c",
                 "from iterflow.store.writer_child import main; main()",
                 str(theirs.fileno()), str(self.parent)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        finally:
            theirs.close()
        self._channel = Channel(ours)
        self._call_lock = threading.Lock()
        self.ready = False

    def poll_ready(self, timeout: float = 0.0) -> bool:
        """Whether the process has started and answered (waits up to ``timeout``)."""
        if self.ready:
            return True
        with self._call_lock:
            if self.ready:
                return True
            if not self._channel.ready(timeout):
                if self._popen.poll() is not None:
                    raise StoreError("the writer process exited while it started")
                return False
            reply = self._channel.receive()  # ("ready", pid)
            if reply[0] != "ready":
                raise StoreError(f"the writer process answered {reply[0]!r} at its start")
            self.ready = True
            return True

    def adopt(self, message: tuple[Any, ...], sink_socket: socket.socket) -> None:
        """Hand the process a sink's recorder, with the socket its batches will come on."""
        with self._call_lock:
            try:
                self._channel.send(message)
                socket.send_fds(self._channel.sock, [b"S"], [sink_socket.fileno()])
                reply = self._channel.receive()
            except (EOFError, OSError) as exc:
                raise self.stopped(exc) from exc
        if reply[0] == "error":
            raise reply[1]

    def stopped(self, exc: BaseException) -> StoreError:
        """The error a sink fails with when the process is gone (it gives up on it)."""
        _give_up(self)
        return StoreError(
            f"The run store's writer process (pid {self._popen.pid}) stopped "
            f"({type(exc).__name__}: {exc}): what this run had not committed yet "
            f"is lost. Resume the run to go on from its last recorded iteration."
        )

    def stop(self) -> None:
        """End the process: it reads the socket's end and exits."""
        self._channel.close()
        # It exits at once, or once its imports are done: no need to wait long for it.
        with contextlib.suppress(Exception):
            self._popen.wait(timeout=1)


def _give_up(process: WriterProcess) -> None:
    global _process, _broken
    with _lock:
        if _process is process:
            _process, _broken = None, True


def writer_process(*, start: bool) -> WriterProcess | None:
    """This process's writer process, started if ``start``; None if there is none (yet)."""
    global _process, _broken
    with _lock:
        if _process is not None and _process.parent != os.getpid():
            _process = None  # inherited through fork: the parent's, not ours
        if _process is None and start and not _broken:
            try:
                _process = WriterProcess()
            except Exception:
                _broken = True
        return _process


@atexit.register
def _stop_at_exit() -> None:
    process = _process
    if process is not None and process.parent == os.getpid():
        process.stop()


class RemoteBatches:
    r"""A sink's :class:`~iterflow.store.batch.BatchRecorder`, adopted by the writer process.

    Its writer thread calls :meth:`commit` and :meth:`beat_due` as it would
    the recorder's; the work happens in the process. Behind a fast loop the
    thread may :meth:`send` the next batch before it :meth:`settle`\ s the
    last, so that the process never waits for the thread's round trip: the
    answers come back in order, and a batch counts as committed only once
    settled.
    """

    def __init__(self, process: WriterProcess, store: RunStore, file_id: Any,
                 recorder: BatchRecorder) -> None:
        self.process = process
        self.open_runs: dict[str, None] = dict(recorder.open_runs)
        self._next_beat = recorder._next_beat
        # The file by its resolved path: this process may have changed directory since.
        url = store.engine.url.set(database=store.name).render_as_string(hide_password=False)
        ours, theirs = socket.socketpair()
        try:
            process.adopt(("adopt", url, store.name, store.lock_timeout, file_id,
                           recorder.state()), theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._channel = Channel(ours)

    def beat_due(self) -> bool:
        """Whether open runs need their heartbeat refreshed (as the recorder's)."""
        return bool(self.open_runs) and time.monotonic() >= self._next_beat

    def send(self, batch: list[tuple[Any, ...]], n_ids: int,
             metrics: list[Taken] | None = None) -> None:
        """Send ``batch`` to be committed (see BatchRecorder.commit); :meth:`settle` it."""
        # A record's last slot is the event its waiter waits on: the thread sets it.
        sendable = [r if r[-1] is None else (*r[:-1], None) for r in batch]
        try:
            self._channel.send(("commit", sendable, n_ids, metrics))
        except OSError as exc:
            raise self.process.stopped(exc) from exc

    def settle(self) -> None:
        """Wait for the oldest batch sent to be committed; raise its error."""
        try:
            reply = self._channel.receive()
        except (EOFError, OSError) as exc:
            raise self.process.stopped(exc) from exc
        if reply[0] == "error":
            raise reply[1]
        _, cancels, open_runs, self._next_beat = reply
        self.open_runs = dict.fromkeys(open_runs)
        if cancels:
            asked(cancels)

    def commit(self, batch: list[tuple[Any, ...]], n_ids: int,
               metrics: list[Taken] | None = None) -> None:
        """Commit ``batch`` in the writer process and wait for it."""
        self.send(batch, n_ids, metrics)
        self.settle()

    def close(self) -> None:
        """Let the process forget this sink's recorder (it reads the socket's end)."""
        self._channel.close()


class HandOver:
    """When a sink's writer thread hands its recorder to the writer process."""

    def __init__(self, store: RunStore, file_id: Any, after: int,
                 streaming: int | None = None) -> None:
        self.store = store
        self.file_id = file_id
        self.after = after
        self.streaming = min(after, HAND_OVER_STREAMING if streaming is None else streaming)
        self.committed = 0
        self.waits = 0
        self.process: WriterProcess | None = None

    def wants(self, records: int, waits: int) -> bool:
        """Count a batch of ``records`` with ``waits`` waiters; whether to hand over now.

        A waiter is a commit someone waits for (a flow run's state, a flush, a
        ``checkpoint="every"`` iteration). With the process each costs a round
        trip to it, so a sink hands over early only while they are rare.
        """
        self.committed += records
        self.waits += waits
        committed = self.committed
        return committed >= self.after or (
            committed >= self.streaming and self.waits * RECORDS_PER_WAIT <= committed
        )

    def due(self, records: int, recorder: BatchRecorder, waits: int = 0) -> RemoteBatches | None:
        """Called before each batch: the recorder's stand-in once handed over, else None."""
        # Once asked for, the process is awaited even if waits came in the meantime.
        if not self.wants(records, waits) and self.process is None:
            return None
        process = self.process
        if process is None:
            process = self.process = writer_process(start=True)
            if process is None:
                return None
        try:
            if not process.poll_ready(_START_TIMEOUT if self.after == 0 else 0.0):
                return None
            return RemoteBatches(process, self.store, self.file_id, recorder)
        except StoreError:
            _give_up(process)
            self.process = None
            return None


def hand_over_policy(store: RunStore) -> HandOver | None:
    """The :class:`HandOver` for a new sink on ``store``; None when it writes itself."""
    mode = _mode()
    if mode == "thread" or _broken or store.read_only or os.name != "posix":
        return None
    if store.engine.dialect.name != "sqlite" or not store.engine.url.database:
        return None  # a server database, or SQLite in memory (not shared between processes)
    try:
        found = os.stat(store.name)
    except OSError:
        return None
    after = 0 if mode == "process" else HAND_OVER_AFTER
    return HandOver(store, (found.st_dev, found.st_ino), after)
