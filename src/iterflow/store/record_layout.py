"""The records the store sink hands its writer: plain tuples, their slots named here.

A record is a plain tuple whose slots are named by the constants below:
``record[T_LOOP_INDEX]``, never ``record[6]``. Its first slot is its tag
(:data:`TASK`, :data:`FLOW`, :data:`LOG`, :data:`MARK`, ...), its last the
``threading.Event`` to set once it is committed (or ``None``). A plain tuple
rather than a named tuple because one is made per loop iteration in the
task's own thread, where a tuple display costs a third of building a named
tuple; :meth:`StoreSink.handle <iterflow.store.writer.StoreSink.handle>` is
the one place that builds a task record from an event, in slot order, and
:func:`~iterflow.store.batch_rows.lane_task_record` the one that builds it from
a task lane's compact record.
"""

from __future__ import annotations

# The tags and the size limit; the slot constants are imported by name where used.
__all__ = ["BIG", "FLOW", "LINK", "LOG", "LOOPED", "MARK", "STARTED", "SUCCEEDED", "TASK"]

#: Record tags.
TASK, FLOW, LOG, MARK, LOOPED, LINK, STARTED, SUCCEEDED = range(8)
#: A task run's state (MARK records hold only their tag and signal: a flush's marker).
(T_TAG, T_FLOW_RUN_ID, T_TASK_RUN_ID, T_SLUG, T_NAME, T_MAP_INDEX, T_LOOP_INDEX, T_KIND,
 T_ROLE, T_TIME, T_MESSAGE, T_TRACEBACK, T_BLOCK_INDEX, T_STORED, T_LOOP_COUNT,
 T_LABEL, T_RUN_NAME, T_SIGNAL) = range(18)
#: A flow run's state; ``F_TASKS`` is the flow's (slug, name) pairs on its first state,
#: ``F_SHAPE`` its description for pictures (``iterflow.core.shape``).
(F_TAG, F_RUN_ID, F_FLOW_NAME, F_KIND, F_TIME, F_MESSAGE, F_PARAMS_JSON, F_PARAMS_STORED,
 F_TASKS, F_SOURCE, F_FINISHED, F_SHAPE, F_SIGNAL) = range(13)
#: A log line.
(L_TAG, L_FLOW_RUN_ID, L_TASK_RUN_ID, L_SLUG, L_MAP_INDEX, L_LOOP_INDEX, L_LEVEL, L_MESSAGE,
 L_TIME, L_SIGNAL) = range(10)
#: A plain ``Looped`` state with a number for its result, from the loop driver's lane
#: (:meth:`~iterflow.store.writer.StoreSink.record_looped`): run and task run ids in the
#: slots of a TASK record's, then the task run's head (flow run id, task run id, slug,
#: name, map index, task run name), the iteration and the number (an int, float or bool
#: pickled in under 64 bytes: the writer pickles it and makes its preview).
(LP_TAG, LP_FLOW_RUN_ID, LP_TASK_RUN_ID, LP_HEAD, LP_LOOP_INDEX, LP_VALUE, LP_TIME,
 LP_LABEL, LP_SIGNAL) = range(9)
#: A task lane's plain ``Running`` (STARTED) and ``Success`` (SUCCEEDED) of a short task
#: run (:meth:`~iterflow.store.writer.StoreSink.record_started`, ``record_success``): the
#: task run's head as the looped lane's, the iteration, the time, the block index, and
#: for a Success its stored value and label. Fewer slots than a TASK record's to fill
#: in the task's thread and to pickle for the writer process (the head is one object
#: for both); the writer makes the TASK record of each (``batch_rows.lane_task_record``).
(LS_TAG, LS_HEAD, LS_LOOP_INDEX, LS_TIME, LS_BLOCK_INDEX, LS_STORED, LS_LABEL) = range(7)
#: A child run's link to its parent (:class:`~iterflow.store.children.ParentLink`), in
#: the parent run's batches (a new child's link commits with its rows, or before them):
#: the parent run's id in the run id's slot, no task run.
(K_TAG, K_RUN_ID, K_TASK_RUN_ID, K_LINK, K_SIGNAL) = range(5)
#: A :data:`~iterflow.store.results.Stored` value: (serializer, data, path, size, preview).
S_SERIALIZER, S_DATA, S_PATH, S_SIZE, S_PREVIEW = range(5)

#: What a task record's role says about its state (``T_ROLE``), by kind:
ROLE_SKIP = 0  # Pending: not recorded
ROLE_START = 1  # Running: recorded unless it follows a Looped
ROLE_LOOP = 2  # Looped: recorded with its result, which must serialize
ROLE_KEEP = 3  # Retrying: recorded, result best-effort
ROLE_END_STRICT = 4  # Success, Cached: finished, result must serialize
ROLE_END = 5  # Failed & co, Skipped, Cancelled: finished, result best-effort
ROLE_END_MAPPED = 6  # Mapped: finished; its result is its children's, stored with them

#: Results counted against the writer's byte budget (small ones are bounded by count).
BIG = 4096
