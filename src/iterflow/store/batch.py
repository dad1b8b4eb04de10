"""A batch of the writer's records into rows: one transaction per batch.

:class:`~iterflow.store.writer.StoreSink` turns each event into a *record*
(:mod:`iterflow.store.record_layout`) and its thread hands them here in
batches; :class:`BatchRecorder` writes a batch in one transaction and
remembers, between batches, what the next one needs (integer keys of the
runs in flight, the runs to keep heartbeating).

How a batch is written
----------------------
Ids of state rows, log lines and results come from one counter, one
``UPDATE`` per batch; flow runs and task runs are referred to by their
integer keys, cached while they are in flight (a batch's newcomers are
looked up, or given keys, in one statement; a task run that starts in the
batch, of a flow run this recorder created and that is still going, cannot
be in the store and is not looked up). Rows are grouped by shape —
a ``Looped`` state with its pickled value, a ``Running``, a finished state
with its value, a flow run's state, anything else — and each group goes in
as one statement (:mod:`iterflow.store.statements`); their ids keep them in
event order. A flow run's states of one batch (a child run's start and end)
update its ``flow_runs`` row once, folded into one upsert. Ownership is read
only for runs already in the store: a run a batch creates has no owner yet.
The first ``Running`` of a task run new to the store that also ends in the
batch is not written (see :class:`BatchRows`): its ``task_runs.started`` says it.
A task lane's compact records (a short task run's ``Running`` and plain
``Success``) are written as they come; only an uncommon one (a label, a value
in a file) is first made the TASK record it stands for.
Nor are the states of a flow run new to the store that starts and ends in
the batch (a child run of a subflow): its ``flow_runs`` row (started, ended,
state, message) is all they would say.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from itertools import count as count_from
from itertools import repeat
from typing import Any

import sqlalchemy as sa

from iterflow.store.batch_rows import BatchRows, as_task_record, lane_task_record, task_run_row
from iterflow.store.cancel_watch import asked, cancel_asked
from iterflow.store.fencing import check_owners
from iterflow.store.flow_rows import write_flow, write_flow_rows
from iterflow.store.metric_packing import Taken, Values, metric_rows, number_span
from iterflow.store.record_layout import (
    BIG,
    F_FINISHED,
    F_RUN_ID,
    FLOW,
    K_LINK,
    L_FLOW_RUN_ID,
    L_LEVEL,
    L_LOOP_INDEX,
    L_MESSAGE,
    L_TASK_RUN_ID,
    L_TIME,
    LINK,
    LOG,
    LOOPED,
    LP_FLOW_RUN_ID,
    LP_LABEL,
    LP_LOOP_INDEX,
    LP_TASK_RUN_ID,
    LP_TIME,
    LP_VALUE,
    LS_BLOCK_INDEX,
    LS_HEAD,
    LS_LABEL,
    LS_LOOP_INDEX,
    LS_STORED,
    LS_TIME,
    ROLE_END_STRICT,
    ROLE_START,
    S_DATA,
    S_PREVIEW,
    S_SERIALIZER,
    STARTED,
    SUCCEEDED,
    T_FLOW_RUN_ID,
    T_ROLE,
    T_SLUG,
    T_TASK_RUN_ID,
    TASK,
)
from iterflow.store.schema import flow_runs, task_runs
from iterflow.store.statements import (
    NATIVE_UPSERT,
    TASK_RUN_COLUMNS,
    TASK_RUN_RULES,
    allocate_ids,
    find_keys,
    insert_finished,
    insert_finished_outside,
    insert_logs,
    insert_looped,
    insert_metrics,
    insert_results,
    insert_running,
    insert_transitions,
    upsert,
    upsert_task_run_rows,
)

# The record tags are importable from here too, where the records are written.
__all__ = ["FLOW", "LINK", "LOG", "LOOPED", "ROLE_END_STRICT", "ROLE_START", "TASK",
           "BatchRecorder"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL  # as handle() pickles a Looped number
_dumps = pickle.dumps


class BatchRecorder:
    """Writes batches of records; owned by one sink's writer thread.

    ``write(transaction)`` commits ``transaction(conn)`` (retrying it whole
    while the database is locked). Between batches it keeps the integer keys
    of the flow runs and task runs in flight and the flow runs still open,
    whose heartbeat it refreshes every ``heartbeat_interval`` seconds.

    Fencing: the runs it starts record ``owner`` as theirs, and every
    transaction first checks that each run it writes for is still theirs
    (a resume elsewhere writes its own token). If one is not, nothing of the
    batch is written and :class:`~iterflow.errors.RunTakenOver` is raised.
    ``identities`` (task slug -> identity, see :mod:`iterflow.core.fingerprint`)
    go into each task run's row, for a later resume to compare. ``forget``
    (run id -> slugs) names the task runs a resumed run runs again because
    their task changed: with the run's first state, their rows lose what a
    resume would reuse (state, results, last iteration); their history stays.
    """

    def __init__(
        self,
        write: Callable[[Callable[[sa.Connection], None]], None],
        heartbeat_interval: float,
        *,
        owner: str,
        identities: dict[str, str] | None = None,
        forget: dict[str, list[str]] | None = None,
    ) -> None:
        self._write = write
        self.heartbeat_interval = heartbeat_interval
        self.owner = owner
        self.identities = identities or {}
        self._forget = dict(forget or {})
        #: Flow runs to keep heartbeating: started, not yet ended.
        self.open_runs: dict[str, None] = {}
        # Integer keys of the flow runs and task runs in flight (their ``id``
        # columns), so that only a batch's newcomers are looked up. A task
        # run's key leaves when it finishes.
        self._run_keys: dict[str, int] = {}
        self._task_keys: dict[str, int] = {}
        # Flow runs this recorder inserted (none of their rows was in the store
        # before) and that have not ended: a task run of one that starts in a
        # batch cannot be in the store yet, so it is not looked up (see commit).
        self._created: dict[str, None] = {}
        self._next_beat = 0.0
        #: Told which runs someone asked to cancel (read with the heartbeat). A
        #: recorder in the writer process collects them for the driving process.
        self.on_cancels: Callable[[list[str]], None] = asked

    #: What :meth:`state` hands over: everything but the write function and the hook.
    _STATE = ("heartbeat_interval", "owner", "identities", "_forget", "open_runs",
              "_run_keys", "_task_keys", "_created", "_next_beat")

    def state(self) -> dict[str, Any]:
        """This recorder's memory between batches, plain data (for :meth:`adopt`)."""
        return {name: getattr(self, name) for name in self._STATE}

    @classmethod
    def adopt(cls, write: Callable[[Callable[[sa.Connection], None]], None],
              state: dict[str, Any]) -> BatchRecorder:
        """A recorder that goes on where the one whose :meth:`state` this is stopped.

        The store's writer process takes over a sink's batches this way: the keys
        of the runs in flight, the runs created and the heartbeat carry over, so
        its first batch is written as the next one of the thread would have been.
        """
        recorder = cls(write, state["heartbeat_interval"], owner=state["owner"])
        for name in cls._STATE:
            setattr(recorder, name, state[name])
        return recorder

    def beat_due(self) -> bool:
        """Whether open runs need their heartbeat refreshed (nothing else to write)."""
        return bool(self.open_runs) and time.monotonic() >= self._next_beat

    def commit(self, batch: list[tuple[Any, ...]], n_ids: int,
               metrics: list[Taken] | None = None) -> None:
        """Write ``batch`` (records, without MARKs) and ``metrics`` in one transaction.

        ``n_ids`` is how many ids the batch's rows take: one per state row and
        log line, one per results row (a value in a file, a run's parameters);
        the metrics, taken from their task runs' buffers, take one per value
        (see metric_packing.number_span). An empty batch only refreshes the heartbeat.
        """
        metrics = metrics or []
        metric_values = [Values(take) for take in metrics]  # read once, not per attempt
        least_number, metric_ids = number_span(metric_values)
        n_ids += metric_ids
        beat = time.monotonic() >= self._next_beat
        committed_runs: dict[str, None] = {}
        run_keys, task_keys = self._run_keys, self._task_keys
        # Flow runs and task runs this batch names that have no key here yet:
        # new ones, or ones an earlier process recorded (a resumed run).
        # Comprehensions over the batch, then loops over its few distinct ids: the
        # writer holds the GIL for this, and a loop's task thread waits for it.
        # Slot 1 is the run id of every record, slot 2 the task run id of all but a
        # flow run's state (None for an engine log line); a task lane's compact
        # record (STARTED, SUCCEEDED: the last tags) has both in its head, slot 1.
        # Dicts keep the order: it is the order new rows get their keys in.
        run_ids = dict.fromkeys([r[T_FLOW_RUN_ID] if r[0] < STARTED else r[LS_HEAD][0]
                                 for r in batch])
        task_ids = dict.fromkeys([r[T_TASK_RUN_ID] if r[0] < STARTED else r[LS_HEAD][1]
                                  for r in batch if r[0] != FLOW])
        if metrics:
            run_ids.update(dict.fromkeys([take.flow_run_id for take in metrics]))
            task_ids.update(dict.fromkeys([take.task_run_id for take in metrics]))
        task_ids.pop(None, None)
        new_runs = {r: None for r in run_ids if r not in run_keys}
        new_tasks = {t: None for t in task_ids if t not in task_keys}
        # Task runs that start in this batch (their Running is here), by flow run.
        # Of a run this recorder created, such a task run has no row yet: the
        # engine starts a task run once and ends it once, and its Running comes
        # before anything else of it. Any other newcomer is looked up — also a
        # task run of a created run whose key left when it ended and that sends
        # a straggler (a log line, a metric).
        if new_tasks:
            starting = {r[T_TASK_RUN_ID]: r[T_FLOW_RUN_ID] for r in batch
                        if r[0] == TASK and r[T_ROLE] == ROLE_START}
            starting.update({h[1]: h[0] for h in [r[LS_HEAD] for r in batch
                                                  if r[0] == STARTED]})
        else:
            starting = {}
        created = self._created
        created_now: list[str] = []
        keyed_runs: dict[str, int] = {}
        keyed_tasks: dict[str, int] = {}
        finished: list[str] = []
        touched = {**self.open_runs, **run_ids}

        cancels: list[str] = []  # runs someone asked to cancel (read with the heartbeat)

        def transaction(conn: sa.Connection) -> None:
            # Everything is rebuilt on each attempt: a retry gets fresh ids.
            cancels.clear()
            keyed_runs.clear()
            keyed_tasks.clear()
            finished.clear()
            keyed_runs.update(find_keys(conn, flow_runs, "run_id", new_runs))
            # A run not in the store yet has no owner to check: a batch of new child
            # runs reads only its parent's (no row to lock either way on PostgreSQL).
            check_owners(conn, self.owner, self.open_runs,
                         {r: None for r in touched if r not in new_runs or r in keyed_runs})
            created_now[:] = [r for r in new_runs if r not in keyed_runs]
            if starting:
                fresh_runs = {**created, **dict.fromkeys(created_now)}
                asked = {t: None for t in new_tasks if starting.get(t) not in fresh_runs}
            else:
                asked = new_tasks
            keyed_tasks.update(find_keys(conn, task_runs, "task_run_id", asked))
            # New rows' keys: the runs created, then the task runs the store has never
            # seen, each in the order the batch names them.
            fresh_tasks = {t: None for t in new_tasks if t not in keyed_tasks}
            count = n_ids + len(created_now) + len(fresh_tasks)
            next_id = allocate_ids(conn, count) if count else 0
            keyed_runs.update(zip(created_now, count_from(next_id)))
            next_id += len(created_now)
            keyed_tasks.update(zip(fresh_tasks, count_from(next_id)))
            next_id += len(fresh_tasks)
            # Task runs the store has never seen: their first Running may be implied.
            rows = BatchRows(fresh_tasks, dict.fromkeys(created_now))
            # Every key the batch's rows need, kept or new, in one map each: a lookup
            # per record. (The two are disjoint: new keys are for names not kept.)
            run_key_of = {**run_keys, **keyed_runs}
            task_key_of = {**task_keys, **keyed_tasks}
            runs = dict(self.open_runs)
            looped_rows, latest, looped, first = (
                rows.looped_rows, rows.latest, rows.looped, rows.first
            )
            fresh, opening, running = rows.fresh, rows.opening, rows.running
            finished_in, finished_outside = rows.finished, rows.finished_outside
            n_records = len(batch)
            at_record = 0
            while at_record < n_records:
                record = batch[at_record]
                at_record += 1
                tag = record[0]
                if tag >= STARTED:
                    # A task lane's record (most of a block's, a map's or a chain's):
                    # its rows made right here, as BatchRows.task_state makes those of
                    # the TASK record it stands for, which it makes only when it must.
                    head = record[LS_HEAD]
                    task_run_id = head[1]
                    run_key = run_key_of[head[0]]
                    task_key = task_key_of[task_run_id]
                    at = record[LS_TIME]
                    if tag == STARTED:
                        row = (next_id, run_key, task_key, record[LS_LOOP_INDEX],
                               record[LS_BLOCK_INDEX], at)
                        if task_run_id not in first:
                            first[task_run_id] = at
                            if task_run_id in fresh:
                                opening[task_run_id] = row  # see BatchRows
                            else:
                                running.append(row)
                        else:
                            running.append(row)
                    else:
                        stored = record[LS_STORED]
                        if (stored is None or stored[S_SERIALIZER] != "pickle"
                                or stored[S_DATA] is None or record[LS_LABEL] is not None):
                            next_id = rows.task_state(lane_task_record(record), run_key,
                                                      task_key, next_id)
                            continue
                        if task_run_id not in first:
                            first[task_run_id] = at
                        data = stored[S_DATA]
                        if len(data) <= BIG:
                            data = bytearray(data)  # see batch_rows.blob
                        block_index = record[LS_BLOCK_INDEX]
                        if block_index is None:
                            finished_outside.append((next_id, run_key, task_key, "Success",
                                                     record[LS_LOOP_INDEX], data,
                                                     stored[S_PREVIEW], at))
                        else:
                            finished_in.append((next_id, run_key, task_key, "Success",
                                                record[LS_LOOP_INDEX], block_index, data,
                                                stored[S_PREVIEW], at))
                    latest[task_run_id] = (record, next_id)
                    next_id += 1
                elif tag == LOOPED:  # most records of a loop: their rows made right here
                    task_run_id = record[LP_TASK_RUN_ID]
                    first_at = record[LP_TIME]
                    run_key = run_key_of[record[LP_FLOW_RUN_ID]]
                    task_key = task_key_of[task_run_id]
                    if record[LP_LABEL] is None:
                        # With the unlabelled Looped records of the same task run that
                        # follow it (behind a fast loop, most of the batch), column by
                        # column: per record, this is where the writer spends its time.
                        end = at_record
                        while end < n_records:
                            following = batch[end]
                            if (following[0] != LOOPED or following[LP_LABEL] is not None
                                    or following[LP_TASK_RUN_ID] != task_run_id):
                                break
                            end += 1
                        if end == at_record:  # alone (a loop block's: between its body's)
                            value = record[LP_VALUE]
                            looped_rows.append((
                                next_id, run_key, task_key, record[LP_LOOP_INDEX],
                                bytearray(_dumps(value, _PROTOCOL)), repr(value), first_at,
                            ))
                        else:
                            span = batch[at_record - 1:end]
                            at_record = end
                            values = [r[LP_VALUE] for r in span]
                            spanned = len(span)
                            looped_rows.extend(zip(
                                range(next_id, next_id + spanned), repeat(run_key, spanned),
                                repeat(task_key, spanned), [r[LP_LOOP_INDEX] for r in span],
                                [bytearray(_dumps(v, _PROTOCOL)) for v in values],
                                map(repr, values), [r[LP_TIME] for r in span],
                            ))
                            next_id += spanned - 1
                            record = span[-1]
                    else:  # the compact row has no label column
                        value = record[LP_VALUE]
                        rows.other.append((next_id, run_key, task_key, "Looped",
                                           record[LP_LOOP_INDEX], None, None, None, "pickle",
                                           _dumps(value, _PROTOCOL), repr(value), None,
                                           record[LP_TIME], record[LP_LABEL]))
                    latest[task_run_id] = (record, next_id)
                    looped[task_run_id] = (record[LP_LOOP_INDEX], next_id)
                    if task_run_id not in first:
                        first[task_run_id] = first_at
                    next_id += 1
                elif tag == TASK:
                    task_run_id = record[T_TASK_RUN_ID]
                    task_key = task_key_of[task_run_id]
                    run_key = run_key_of[record[T_FLOW_RUN_ID]]
                    next_id = rows.task_state(record, run_key, task_key, next_id)
                elif tag == LOG:
                    task_run_id = record[L_TASK_RUN_ID]
                    rows.logs.append((
                        next_id,
                        run_key_of[record[L_FLOW_RUN_ID]],
                        None if task_run_id is None else task_key_of[task_run_id],
                        record[L_LOOP_INDEX], record[L_LEVEL], record[L_MESSAGE], record[L_TIME],
                    ))
                    next_id += 1
                elif tag == LINK:
                    rows.links.append(record[K_LINK])
                elif tag == FLOW:
                    if record[F_RUN_ID] in self._forget:
                        _forget(conn, record[F_RUN_ID], self._forget[record[F_RUN_ID]])
                    run_key = run_key_of[record[F_RUN_ID]]
                    next_id = write_flow(record, run_key, next_id, rows, runs, self.owner)
            chunks = metric_rows(metrics, metric_values, next_id - least_number, run_key_of,
                                 task_key_of)
            next_id += metric_ids
            write_flow_rows(conn, rows)
            snapshots: list[tuple[Any, ...]] = []
            identities = self.identities
            for task_run_id, (record, row_id) in latest.items():
                task_key = task_key_of[task_run_id]
                if record[0] == SUCCEEDED and task_run_id not in looped:
                    # The common end of a short task run: its row without the TASK record.
                    flow_run_id, _, slug, name, map_index, run_name = record[LS_HEAD]
                    loop_index = record[LS_LOOP_INDEX]
                    snapshots.append((
                        task_run_id, task_key, flow_run_id, slug, name, map_index,
                        "Success", loop_index + 1, loop_index, None, None, row_id,
                        first[task_run_id], record[LS_TIME], None, identities.get(slug),
                        run_name,
                    ))
                    finished.append(task_run_id)
                    continue
                if record[0] == LOOPED:
                    record = as_task_record(record)
                elif record[0] >= STARTED:
                    record = lane_task_record(record)
                snapshots.append(task_run_row(
                    record, task_key, row_id, first[task_run_id],
                    looped.get(task_run_id), identities.get(record[T_SLUG]),
                ))
                if record[T_ROLE] >= ROLE_END_STRICT:
                    finished.append(task_run_id)
                elif task_run_id in opening:  # still open: its start is history
                    running.append(opening[task_run_id])
            insert_results.run(conn, rows.results)
            if conn.dialect.name in NATIVE_UPSERT:
                upsert_task_run_rows(conn, snapshots)
            else:
                upsert(conn, task_runs, "task_run_id",
                       [dict(zip(TASK_RUN_COLUMNS, row)) for row in snapshots],
                       TASK_RUN_RULES)
            insert_looped.run(conn, rows.looped_rows)
            insert_running.run(conn, rows.running)
            insert_finished.run(conn, rows.finished)
            insert_finished_outside.run(conn, rows.finished_outside)
            insert_transitions.run(conn, rows.other)
            insert_logs.run(conn, rows.logs)
            insert_metrics.run(conn, chunks)
            if rows.links:
                from iterflow.store.children import write_links

                write_links(conn, rows.links)
            if beat and runs:
                conn.execute(
                    sa.update(flow_runs)
                    .where(flow_runs.c.run_id.in_(list(runs)))
                    .values(heartbeat=time.time())
                )
                cancels.extend(cancel_asked(conn, list(runs), self.owner))
            committed_runs.clear()
            committed_runs.update(runs)

        self._write(transaction)
        # Only now, with the transaction committed, do the run set and keys change.
        # Keys of what finished are dropped (a straggler's event looks them up again),
        # so these maps hold only what is in flight.
        self.open_runs = committed_runs
        run_keys.update(keyed_runs)
        task_keys.update(keyed_tasks)
        created.update(dict.fromkeys(created_now))
        for task_run_id in finished:
            task_keys.pop(task_run_id, None)
        for record in [r for r in batch if r[0] == FLOW]:
            self._forget.pop(record[F_RUN_ID], None)
            if record[F_FINISHED]:  # a flow run ended: its task runs too
                run_keys.pop(record[F_RUN_ID], None)
                created.pop(record[F_RUN_ID], None)  # a later record of it is looked up
                prefix = record[F_RUN_ID] + "/"
                for task_run_id in [t for t in task_keys if t.startswith(prefix)]:
                    del task_keys[task_run_id]
        if beat:
            self._next_beat = time.monotonic() + self.heartbeat_interval
        if cancels:
            self.on_cancels(cancels)


def _forget(conn: sa.Connection, run_id: str, slugs: list[str]) -> None:
    """Clear what a resume would reuse from the task runs of ``slugs`` (see BatchRecorder)."""
    conn.execute(
        sa.update(task_runs)
        .where(task_runs.c.flow_run_id == run_id, task_runs.c.task_slug.in_(slugs))
        .values(state="Pending", loop_count=None, looped_index=None, looped_transition=None,
                result_transition=None, identity=None,
                message="its task changed since it ran: it runs again")
    )
