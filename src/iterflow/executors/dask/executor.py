"""The Dask executor's life cycle and its side of the contract: submit, wait, result, cancel.

Sending
    :meth:`DaskExecutor.submit` queues the job; :meth:`~DaskExecutor.wait` sends
    the queue in batches, and what jobs share once
    (:mod:`~iterflow.executors.dask.sending`). The runner's cancel flag stays
    here: the job gets a flag that works on its worker.

Receiving
    A job's result arrives on the run's topic with its last events
    (:mod:`~iterflow.executors.dask.stream`). A job that ends without a
    message (an error outside the task run, a job given up after its workers
    kept dying) is found by a look at the futures' status while ``wait()``
    blocks; a result too big to push is fetched with one ``client.gather``
    for all that finished together.

Failures
    A worker that dies mid-job (even by SIGKILL) makes the scheduler run the
    job again elsewhere; that new *attempt* has its own id and sequence, and
    the run goes on. distributed gives up on a job only after
    ``distributed.scheduler.allowed-failures`` (default 3) workers died
    running it, which the runner reports as that task run failing. Jobs are
    never retried by distributed on exceptions (no ``retries=``): iterflow's
    own retries resume the current iteration, distributed's would restart the
    task run. A rerun attempt continues at the last recorded iteration when
    the run has a store (the task run's checkpoint source). A cancelled run
    (Ctrl-C, SIGTERM) cancels its futures as soon as the runner's flag is set;
    a loop running on a worker sees that before its next iteration and records
    itself ``Cancelled`` there, as it would in-process.
"""

from __future__ import annotations

import contextlib
import pickle
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from iterflow.errors import ExecutorError, SerializationError
from iterflow.executors.base import Executor
from iterflow.executors.dask.connect import (
    acknowledge_later,
    forget_topic,
    join,
    start_local_cluster,
    trim_later,
)
from iterflow.executors.dask.sending import Sender, job_key
from iterflow.executors.dask.stream import EventStream
from iterflow.executors.dask.worker import (
    CANCEL,
    LAST_EVENT,
    UNPICKLABLE,
    Relay,
    WorkerCall,
)

__all__ = ["DaskExecutor"]

# Status of a Dask future that ended without the job's result.
_ENDED_BADLY = frozenset({"error", "cancelled"})


class _Job:
    """A job as the runner holds it: hashable, and the Dask future once it is sent."""

    __slots__ = ("call", "ended", "error", "executor", "future", "key", "payload", "shared")

    def __init__(self, key: str, call: WorkerCall, shared: list,
                 executor: DaskExecutor) -> None:
        self.key = key
        self.call: WorkerCall | None = call
        self.shared = shared  # futures of the shared values the job needs
        self.future: Any = None
        self.payload: tuple | None = None
        self.error: BaseException | None = None
        self.executor: DaskExecutor | None = executor
        #: How the job ended when the executor stopped early: (state, None) or (None, error).
        self.ended: tuple[Any, BaseException | None] | None = None

    def done(self) -> bool:
        """Finished, one way or another (what the runner asks while cancelling).

        While the run is being cancelled, asking also tells the workers and
        takes in the messages that arrived (see :meth:`DaskExecutor._job_done`).
        """
        if self.error is not None or self.payload is not None or self.ended is not None:
            return True
        executor = self.executor
        # With no executor (it stopped early), a job that said nothing is left to the
        # runner, which records it Cancelled.
        return executor is not None and executor._job_done(self)

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
    does not lose the run. See :mod:`iterflow.executors.dask` for how it works.

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
    #: Most bytes of events a job may send ahead of the client's sinks; beyond
    #: that it waits before its next event (flow control: the driver's memory
    #: stays flat however fast a loop makes big results).
    events_ahead: int = 4 * 1024 * 1024
    #: Seconds ``result()`` waits for a job's events still in transit.
    event_grace: float = 10.0
    #: Results up to this many bytes (pickled) are pushed to the client with the
    #: news that the job is done; bigger ones are fetched from the worker.
    push_limit: int = 64 * 1024
    #: A job's shared values (its run's context, the parameters among them, and
    #: its inputs) at least this big (``dask.sizeof``) are sent to every worker
    #: once, not with each job.
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
    #: Seconds a run that stops early waits for its running jobs to stop at their
    #: next iteration and say so (as the runner waits for in-process loops).
    cancel_grace: float = 2.0

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
        self._depth = 0  # how many start() are open (see Executor.start)
        self._reset(None, None)

    def _reset(self, client: Any, topic: str | None) -> None:
        self._client = client
        self._topic = topic
        self._events: tuple | None = None
        self._stream = EventStream(None, self._on_result, self.event_grace, self.idle_interval,
                                   self._trim, self._acknowledge)
        self._pending: list[_Job] = []  # submitted, not sent yet
        self._inflight: dict[str, _Job] = {}  # sent, not known to be done
        self._done: set[_Job] = set()  # done, not yet returned by wait()
        self._next_look = 0.0
        self._released: list[Any] = []  # futures of finished jobs, to let go in a batch
        self._sender = Sender(client, self.share_limit)
        self._cancel_flag: Any = None  # the runner's, from shared["cancel"]
        self._stop_at: float | None = None  # when the run's jobs were cancelled on the cluster

    # -- life cycle ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def start(self) -> Iterator[DaskExecutor]:
        """Connect (or start a local cluster) for one flow run; disconnect after.

        Entered again while started, it uses the same connection (the runtime
        connects before it records a run; the runner starts the executor again).
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        if self._client is not None:
            raise RuntimeError(f"{self!r} is already running a flow; use one executor per run")
        client, cluster = self._connect()
        topic = f"iterflow-{uuid.uuid4().hex}"
        self._reset(client, topic)
        # Runs on the client's event-loop thread: only hands the message over.
        client.subscribe_topic(topic, self._stream.receive)
        self._depth = 1
        finished = False
        try:
            yield self
            finished = True
        except BaseException:
            with contextlib.suppress(Exception):
                self._wind_down()
            raise
        finally:
            self._depth = 0
            self._stop(client, cluster, topic, finished)

    def _connect(self) -> tuple[Any, Any]:
        if self.client is not None:
            return self.client, None
        if self.address is not None:
            return join(self.address, self.connect_timeout), None
        return start_local_cluster(self.cluster_kwargs)

    def _stop(self, client: Any, cluster: Any, topic: str, finished: bool) -> None:
        try:
            if finished:
                self._stream.drain(block=False)  # events that arrived after the last result
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
                    client.run_on_scheduler(forget_topic, topic)
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
            raise RuntimeError(
                "DaskExecutor.event_relay() called outside executor.start(); "
                "use it inside `with executor.start():`"
            )
        self._stream.emit = emit
        if emit is None:
            self._events = None
            return None
        self._events = (self.event_interval, self.event_batch, self.event_bytes,
                        self.events_ahead)
        return Relay(self._topic)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               shared: Mapping[str, Any] | None = None) -> _Job:
        """Queue ``fn(*args, **shared)``; it is sent with the others at the next ``wait()``."""
        if self._client is None:
            raise RuntimeError(
                "DaskExecutor.submit() called outside executor.start(); "
                "use it inside `with executor.start():`"
            )
        dask_key = job_key(key, fn)
        send, places, futures = self._sender.split(shared)
        cancel = False
        if shared is not None and shared.get(CANCEL) is not None:
            # The runner's flag means nothing on a worker: the job gets a CancelProbe there.
            self._cancel_flag = shared[CANCEL]
            cancel = True
        call = WorkerCall(fn, args, dask_key, self._topic, self.push_limit, self._events,
                          send, places, cancel)
        job = _Job(dask_key, call, futures, self)
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
        if self._released:  # results taken since the last wait(): nothing left to recompute
            self._let_go()
        stream = self._stream
        stream.drain(block=False)
        ready = self._done & jobs
        while not ready:
            flag = self._cancel_flag
            if flag is not None and flag.is_set() and self._stop_at is None:
                # Cancelled from another thread (iterflow cancel): the runner records the
                # run Cancelled. Once only: a wait after this one waits for the results.
                self._stop_jobs()
                break
            idle = not stream.drain(block=True)
            if idle:
                self._let_go()
            self._look_for_failures(idle)
            ready = self._done & jobs
        self._done -= ready
        self._fetch(ready)
        jobs -= ready  # ours to change: what is left is the jobs not done
        return ready, jobs

    def result(self, future: _Job) -> Any:
        """The job's final state, after delivering every event it emitted.

        The job's history is then complete: what else arrives for it is dropped.
        """
        job = future
        if job.ended is not None:
            state, error = job.ended
            if error is not None:
                raise error
            return state
        try:
            return self._result(job)
        finally:
            self._stream.close(job.key)

    def _result(self, job: _Job) -> Any:
        if job.error is not None:
            raise job.error
        payload, future = job.payload, job.future
        job.future = job.payload = None
        if payload is None:
            if future is None or (self._stop_at is not None and future.status == "cancelled"):
                raise ExecutorError("the run was cancelled before this job started")
            payload = future.result()  # raises what ended the job (e.g. KilledWorker)
        else:
            self._release(future)
        attempt, sent, tail, how, data = payload
        if attempt is not None:
            stream = self._stream
            stream.catch_up(attempt, sent)
            if how == LAST_EVENT:
                stream.deliver(tail[:-1], job.key, attempt)
                return stream.final(tail[-1], self._loads)
            stream.deliver(tail, job.key, attempt)
        if how == UNPICKLABLE:
            raise SerializationError(data)
        return self._loads(data)

    def cancel(self, futures: Iterable[_Job]) -> None:
        """Drop queued jobs and cancel sent ones (a running job finishes on its worker)."""
        jobs = set(futures)
        self._pending = [job for job in self._pending if job not in jobs]
        sent = []
        for job in jobs:
            self._inflight.pop(job.key, None)
            self._stream.close(job.key)  # the caller records how it ended
            if job.future is not None:
                sent.append(job.future)
        if sent and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.cancel(sent)

    # -- stopping early -----------------------------------------------------------------------
    def _job_done(self, job: _Job) -> bool:
        """``job.done()`` while started: is it over, with a result to take?

        Once the runner's cancel flag is set (Ctrl-C, SIGTERM), the run's jobs
        are cancelled on the cluster (:meth:`_stop_jobs`); a looping job then
        stops at its next iteration on its worker and its result, ending in
        its own ``Cancelled``, arrives on the topic: it is done when that has
        arrived. A job that sent nothing never started, and is done with
        nothing to record (as a queued job on threads).
        """
        flag = self._cancel_flag
        if self._stop_at is None and (flag is None or not flag.is_set()):
            return job.future is not None and job.future.done()
        self._stop_jobs()
        self._stream.drain(block=False)
        return job.payload is not None or job.error is not None or self._never_started(job)

    def _stop_jobs(self) -> None:
        """Cancel every job of the run on the cluster (once): what workers' probes see."""
        if self._stop_at is not None:
            return
        self._stop_at = time.monotonic()
        sent = [job.future for job in self._inflight.values() if job.future is not None]
        if sent and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.cancel(sent)

    def _never_started(self, job: _Job) -> bool:
        """A cancelled job that sent no event, once what it sent has had time to arrive."""
        if job.key in self._stream.started or self._stop_at is None:
            return False
        settle = max(0.25, 4 * self.event_interval)
        return time.monotonic() - self._stop_at >= settle

    def _wind_down(self) -> None:
        """The run stops early while jobs still run: stop them, and keep what they say.

        Called when ``start()`` ends with an exception (Ctrl-C, SIGTERM, an
        error). Waits up to :attr:`cancel_grace` for jobs that had started to
        stop at their next iteration, delivers each one's events now, while
        the sinks are open, and keeps its final state for :meth:`result`.
        A job with no word by then is left to the runner, which records it
        ``Cancelled``.
        """
        self._stop_jobs()
        stream = self._stream
        deadline = self._stop_at + self.cancel_grace
        jobs = [*self._pending, *self._inflight.values(), *self._done]
        while time.monotonic() < deadline:
            stream.drain(block=False)
            if not any(job.payload is None and job.error is None and not self._never_started(job)
                       for job in jobs):
                break
            time.sleep(0.02)
        for job in jobs:
            if job.payload is not None or job.error is not None or self._never_started(job):
                try:
                    job.ended = (self.result(job), None)
                except Exception as exc:
                    job.ended = (None, exc)
            job.executor = None

    # -- sending ------------------------------------------------------------------------------
    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.submit_batch):
            sent, failed = self._sender.send(pending[start : start + self.submit_batch])
            inflight = self._inflight
            for job in sent:
                inflight[job.key] = job
            for job, error in failed:
                job.error = error
                self._done.add(job)

    # -- receiving ----------------------------------------------------------------------------
    def _acknowledge(self, worker: str, attempt: str, delivered: int) -> None:
        acknowledge_later(self._client, worker, attempt, delivered)

    def _trim(self) -> None:
        trim_later(self._client, self._topic)

    def _release(self, future: Any) -> None:
        """Let go of a finished job's future -- soon, and together with others.

        Dropping a distributed future schedules a message on the client's event
        loop, a wake-up of that thread which, in this thread, costs more than
        the rest of the job's handling (the loop thread, busy scheduling, holds
        the GIL). So futures of jobs whose results were taken are dropped
        together, by the loop thread itself, at the runner's next ``wait()``
        (or every :attr:`release_batch`). Soon matters: while the client holds
        a finished job's future, a worker lost with its result makes
        distributed run the job again, for nothing.
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
        self._stream.drain(block=False)  # so that a result already here is not taken for missing
        for key, job in list(self._inflight.items()):
            status = job.future.status
            # "finished" with no message: the message went missing; fetch the result.
            if status in _ENDED_BADLY or status == "finished":
                del self._inflight[key]
                self._done.add(job)

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
