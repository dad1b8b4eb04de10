"""Public home of the state classes (see :mod:`iterflow.core.state` for the model)."""

from iterflow.core.state import (
    Cached,
    Cancelled,
    Failed,
    Kind,
    Looped,
    Mapped,
    Pending,
    Retrying,
    Running,
    Skipped,
    State,
    Success,
    TimedOut,
    TriggerFailed,
)

__all__ = [
    "Cached",
    "Cancelled",
    "Failed",
    "Kind",
    "Looped",
    "Mapped",
    "Pending",
    "Retrying",
    "Running",
    "Skipped",
    "State",
    "Success",
    "TimedOut",
    "TriggerFailed",
]
