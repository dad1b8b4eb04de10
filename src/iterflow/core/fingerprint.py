"""A task's identity in its flow: what a resumed run compares before reusing a result.

Task slugs come from call order (``fetch``, ``fetch-2``, ...), so a slug alone
does not say that a task is the same call it was when the run started: add
``fetch("B")`` before ``fetch("A")`` and the slug ``fetch`` names the new
call. A run records, with each task run, the identity of its task (see
:func:`task_identities`); a resume reuses a recorded result only where the
flow's task with that slug still has that identity, and runs the others again.

An identity is a digest of

* the task's kind and name, and its position among the flow's tasks of the
  same name (the order they were added);
* its constant arguments (each value's pickle, or its ``repr`` when it
  cannot be pickled) and, for the literal behind ``t.map([...])``, its value;
* each upstream edge: key, mapped or flattened, and the upstream task's slug
  *and identity*, so a changed task changes everything downstream of it too;
* for a loop block, the identities of the tasks inside it.

A value whose pickle differs from one process to the next (a set of strings,
an object holding a lock) makes its task look changed: it runs again, which
is safe, never wrong.

>>> with Flow("etl") as flow:                          # doctest: +SKIP
...     report(fetch("A"))
>>> task_identities(flow)                                # doctest: +SKIP
{'fetch': '5f0c...', 'report': '9a41...'}
"""

from __future__ import annotations

import hashlib
from typing import Any

from iterflow.core.block import LoopBlock
from iterflow.core.helpers import Constant
from iterflow.pickling import dumps

__all__ = ["task_identities"]


def task_identities(flow: Any) -> dict[str, str]:
    """Every task's identity in ``flow``, by slug (hex digests; see the module doc)."""
    tasks = flow.get_tasks()  # in the order they were added
    position: dict[Any, int] = {}
    seen: dict[str, int] = {}
    for task in tasks:
        seen[task.name] = seen.get(task.name, 0) + 1
        position[task] = seen[task.name]
    done: dict[Any, str] = {}

    def identity(task: Any, visiting: frozenset[Any]) -> str:
        known = done.get(task)
        if known is not None:
            return known
        if task in visiting:  # a block and what is inside it: name it, do not recurse
            return f"slug:{task.slug}"
        visiting = visiting | {task}
        digest = hashlib.sha256()
        parts: list[str] = [
            type(task).__qualname__, task.name, str(position.get(task, 0)),
        ]
        for key, value in sorted(flow.constants.get(task, {}).items()):
            parts.append(f"const {key}={_value_digest(value)}")
        if isinstance(task, Constant):
            parts.append(f"literal={_value_digest(task.value)}")
        upstream = sorted(
            (e.key or "", e.mapped, e.flattened, e.upstream_task.slug,
             identity(e.upstream_task, visiting))
            for e in flow.upstream_edges(task)
        )
        parts.extend(repr(edge) for edge in upstream)
        for member in task.members if isinstance(task, LoopBlock) else ():
            parts.append(f"member {member.slug} {identity(member, visiting)}")
        for part in parts:
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
        done[task] = found = digest.hexdigest()[:32]
        return found

    return {task.slug: identity(task, frozenset()) for task in tasks}


def _value_digest(value: Any) -> str:
    try:
        data = dumps(value)
    except Exception:
        data = repr(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:16]
