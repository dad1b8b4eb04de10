"""Is a run recorded as live really alive? Hosts, process ids, heartbeats.

A run being driven records the pid and host of its process and a heartbeat
its writer refreshes every few seconds. A run recorded as ``Running`` or
``Pending`` is reported as ``Crashed`` when its heartbeat is older than the
store's ``stale_after`` (30 s by default) or when it ran on this host and its
process is gone.

``recorded_state`` keeps what the database says.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from iterflow.store.records import RunInfo

__all__ = ["HOST", "LIVE", "effective_state", "pid_alive", "run_info"]

#: The states a run is recorded in while some process drives it.
LIVE = frozenset({"Running", "Pending"})
#: This machine's name, as runs record it.
HOST = socket.gethostname()


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
) -> str:
    """``state``, or ``"Crashed"`` when a run recorded as live is not (see module doc)."""
    if state not in LIVE:
        return state
    now = time.time() if now is None else now
    if heartbeat is None or now - heartbeat > stale_after:
        return "Crashed"
    if pid is not None and host == HOST and not pid_alive(pid):
        return "Crashed"
    return state


def run_info(row: Any, stale_after: float) -> RunInfo:
    """A ``flow_runs`` row as a :class:`RunInfo`, its state as it should be shown."""
    return RunInfo(
        run_id=row.run_id,
        flow_name=row.flow_name,
        state=effective_state(
            row.state, row.pid, row.host, row.heartbeat, stale_after=stale_after
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
