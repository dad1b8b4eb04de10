"""One run started by ``iterflow serve``, in a process of its own.

``python -m iterflow.schedules.child`` reads a pickled dict from stdin —
``source`` (``/abs/file.py:var``) or ``flow`` (a cloudpickle of it),
``run_id``, ``resume``, ``parameters``, ``trigger`` — loads the flow, runs
(or resumes) it with the store named by ``ITERFLOW_STORE_URL``, and exits
0 when it succeeded, 1 when it failed, 143 when cancelled (SIGTERM).
"""

from __future__ import annotations

import pickle
import sys
from typing import Any


def main() -> int:
    """Run the flow the payload on stdin describes; the exit code says how it ended."""
    from iterflow.errors import RunCancelled
    from iterflow.runtime import run_flow

    payload: dict[str, Any] = pickle.loads(sys.stdin.buffer.read())
    source = payload.get("source")
    if source is not None:
        from iterflow.cli.common import CliError
        from iterflow.cli.run import load_flow

        try:
            flow = load_flow(source).flow
        except CliError as exc:
            exc.show()
            return 2
    else:
        flow = pickle.loads(payload["flow"])
    resume = payload["run_id"] if payload.get("resume") else None
    try:
        state = run_flow(
            flow,
            parameters=None if resume else payload.get("parameters"),
            resume=resume,
            run_id=None if resume else payload["run_id"],
            source=source,
            trigger=payload.get("trigger"),
        )
    except (RunCancelled, KeyboardInterrupt):
        return 143
    return 0 if state.is_successful() else 1


if __name__ == "__main__":
    sys.exit(main())
