"""Triggers: pure functions deciding whether a task runs, given its upstream states.

A trigger takes a mapping ``{upstream_task: state}`` and returns True (run) or
False (the task becomes ``TriggerFailed``, its message naming the upstream
states that failed the trigger). For triggers a ``Skipped`` upstream counts as
successful; skips stop a task only through ``skip_on_upstream_skip``.

>>> from iterflow import task, triggers
>>> @task(trigger=triggers.all_finished)
... def cleanup():
...     ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iterflow.core.state import State

__all__ = [
    "all_failed",
    "all_finished",
    "all_successful",
    "always_run",
    "any_failed",
    "any_successful",
    "not_all_skipped",
    "offending_states",
]


def all_successful(upstream_states: Mapping[Any, State]) -> bool:
    """Run when every upstream succeeded (or was skipped). The default."""
    return all(s.is_successful() for s in upstream_states.values())


def all_failed(upstream_states: Mapping[Any, State]) -> bool:
    """Run when every upstream failed (a clean-up or alert task)."""
    return all(s.is_failed() for s in upstream_states.values())


def any_successful(upstream_states: Mapping[Any, State]) -> bool:
    """Run when at least one upstream succeeded (or there is none)."""
    return not upstream_states or any(s.is_successful() for s in upstream_states.values())


def any_failed(upstream_states: Mapping[Any, State]) -> bool:
    """Run when at least one upstream failed (or there is none)."""
    return not upstream_states or any(s.is_failed() for s in upstream_states.values())


def all_finished(upstream_states: Mapping[Any, State]) -> bool:
    """Run whatever the upstream outcome, once every upstream finished."""
    return all(s.is_finished() for s in upstream_states.values())


always_run = all_finished


def not_all_skipped(upstream_states: Mapping[Any, State]) -> bool:
    """Run unless every upstream was skipped (what ``merge`` uses)."""
    return not upstream_states or not all(s.is_skipped() for s in upstream_states.values())


def offending_states(trigger: Any, upstream_states: Mapping[Any, State]) -> dict[Any, State]:
    """The upstream states that made ``trigger`` fail, for the error message."""
    if trigger in (all_successful, any_successful):
        bad = {t: s for t, s in upstream_states.items() if not s.is_successful()}
    elif trigger in (all_failed, any_failed):
        bad = {t: s for t, s in upstream_states.items() if not s.is_failed()}
    elif trigger is not_all_skipped:
        bad = {t: s for t, s in upstream_states.items() if s.is_skipped()}
    else:
        bad = {}
    return bad or dict(upstream_states)
