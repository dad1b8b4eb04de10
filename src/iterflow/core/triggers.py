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
    "describe_upstream",
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


#: At most this many failed children are named in a message; the rest are counted.
NAMED_CHILDREN = 5


def describe_upstream(states: Mapping[Any, State]) -> str:
    """Upstream states for a message: ``slug: Kind``, and for a map, which children failed.

    A mapped upstream is not "Mapped" to a reader who wants to know what went
    wrong: say how many of its children failed and which (by map index).

    >>> from iterflow.core.state import Failed, Mapped, Success
    >>> class T: slug = "child"
    >>> describe_upstream({T(): Mapped(map_states=[Success(), Failed(), Success()])})
    'child: 1 of 3 mapped children failed (map index 1: Failed)'
    """
    return ", ".join(_describe(task.slug, state) for task, state in states.items())


def _describe(slug: str, state: State) -> str:
    children = getattr(state, "map_states", None)
    if not children:
        return f"{slug}: {state.name}"
    bad = [(i, s) for i, s in enumerate(children) if s.is_failed() or s.is_cancelled()]
    if not bad:
        return f"{slug}: {state.name}"
    which = ", ".join(f"{i}: {s.name}" for i, s in bad[:NAMED_CHILDREN])
    if len(bad) > NAMED_CHILDREN:
        which += f", and {len(bad) - NAMED_CHILDREN} more"
    noun = "map index" if len(bad) == 1 else "map indexes"
    return (f"{slug}: {len(bad)} of {len(children)} mapped children failed "
            f"({noun} {which})")
