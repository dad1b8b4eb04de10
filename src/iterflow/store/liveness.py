"""Is a run recorded as live really alive? Hosts, process ids, heartbeats.

A run being driven records the pid and host of its process, a heartbeat its
writer refreshes every few seconds, and its writer's owner token. A run
recorded as ``Running`` or ``Pending`` is reported as ``Crashed`` when

* it ran on this host and its process is gone. A live pid on this host is
  alive whatever its heartbeat says: a stopped process (Ctrl-Z, SIGSTOP) is
  not dead, and resuming its run would make two drivers;
* it ran on another host and its heartbeat is older than the store's
  ``stale_after`` (30 s by default), since a pid there cannot be checked.

Another host's process may be only slow, not dead. Fencing covers that case:
a resume writes a new owner token, and a writer whose token is gone stops
(:class:`~iterflow.store.batch.BatchRecorder`, :class:`~iterflow.errors.RunTakenOver`).

``recorded_state`` keeps what the database says.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iterflow.store.records import RunInfo

__all__ = [
    "HOST", "LIVE", "driver_pid", "driving", "effective_state", "pid_alive", "run_info",
    "write_for",
]

#: The states a run is recorded in while some process drives it.
LIVE = frozenset({"Running", "Pending"})
#: This machine's name, as runs record it.
HOST = socket.gethostname()

# Runs this process drives now (claimed, or a sink recording them), with the
# owner tokens it drives them under. A run recorded with this process's own pid
# is live only while it is here: one this process gave up (its store failed,
# its sink closed) is Crashed.
_DRIVEN_HERE: dict[str, set[str]] = {}

# The process whose runs this one records: itself, unless it is the store's writer
# process (iterflow.store.writer_child), whose rows name the process driving the runs.
_DRIVER_PID: int | None = None


def driver_pid() -> int:
    """The pid that rows of runs written by this process record as the driving one."""
    return _DRIVER_PID if _DRIVER_PID is not None else os.getpid()


def write_for(pid: int) -> None:
    """Record runs as driven by process ``pid`` (the writer process, for its parent)."""
    global _DRIVER_PID
    _DRIVER_PID = pid


def driving(run_id: str, owner: str, now: bool) -> None:
    """Note that this process starts (``now=True``) or stops driving ``run_id`` as ``owner``."""
    owners = _DRIVEN_HERE.get(run_id)
    if owners is None:  # (no set made on each call: a child run of a subflow makes two)
        owners = _DRIVEN_HERE.setdefault(run_id, set())
    if now:
        owners.add(owner)
    else:
        owners.discard(owner)
        if not owners:
            _DRIVEN_HERE.pop(run_id, None)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    # A killed process its parent has not reaped yet still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            status = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return status not in (b"Z", b"X")


def effective_state(
    state: str,
    pid: int | None,
    host: str | None,
    heartbeat: float | None,
    *,
    stale_after: float,
    now: float | None = None,
    run_id: str | None = None,
) -> str:
    """``state``, or ``"Crashed"`` when a run recorded as live is not (see module doc).

    ``run_id`` lets a run recorded by this very process be judged by whether
    it still drives it.
    """
    if state not in LIVE:
        return state
    if run_id is not None and pid == os.getpid() and host == HOST:
        return state if run_id in _DRIVEN_HERE else "Crashed"
    if pid is not None and host == HOST:
        # The process table is the truth here; a heartbeat only stands in for it
        # where the pid cannot be checked. A process that is stopped (Ctrl-Z,
        # SIGSTOP) or holds the GIL in a long call beats late, and is alive.
        return state if pid_alive(pid) else "Crashed"
    now = time.time() if now is None else now
    if heartbeat is None or now - heartbeat > stale_after:
        return "Crashed"
    return state


def run_info(row: Any, stale_after: float) -> RunInfo:
    """A ``flow_runs`` row as a :class:`RunInfo`, its state as it should be shown."""
    # Imported here: a run that only records never builds one, and the records'
    # frozen dataclasses cost several ms to define (see benchmarks/startup.py).
    from iterflow.store.records import RunInfo

    return RunInfo(
        run_id=row.run_id,
        flow_name=row.flow_name,
        state=effective_state(
            row.state, row.pid, row.host, row.heartbeat, stale_after=stale_after,
            run_id=row.run_id,
        ),
        started=row.started,
        ended=row.ended,
        recorded_state=row.state,
        parameters=row.parameters,
        source=row.source,
        pid=row.pid,
        host=row.host,
        heartbeat=row.heartbeat,
        message=row.message,
    )
