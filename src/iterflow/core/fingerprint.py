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

from hashlib import sha256
from typing import Any

from iterflow.core.block import LoopBlock
from iterflow.core.helpers import Constant
from iterflow.pickling import dumps

__all__ = ["task_identities"]


def task_identities(flow: Any) -> dict[str, str]:
    """Every task's identity in ``flow``, by slug (hex digests; see the module doc).

    Linear in the flow's size: each task is digested once, from its upstreams'
    digests (found first, depth first, in the order of its edges: a member of a
    block reached through the block names the block rather than recursing into it).
    """
    tasks = flow.get_tasks()  # in the order they were added
    position: dict[Any, int] = {}
    seen: dict[str, int] = {}
    for task in tasks:
        seen[task.name] = count = seen.get(task.name, 0) + 1
        position[task] = count
    upstream_of, _ = flow.edge_lists()  # read only: upstream_edges() copies a list per call
    constants = flow.constants
    done: dict[Any, str] = {}
    visiting: set[Any] = set()  # the tasks on the path from the task asked for to this one

    def identity(task: Any) -> str:
        known = done.get(task)
        if known is not None:
            return known
        if task in visiting:  # a block and what is inside it: name it, do not recurse
            return f"slug:{task.slug}"
        visiting.add(task)
        # The parts, each followed by a NUL, digested in one update: the same bytes (so
        # the same digest) as an update per part, for a fraction of the calls.
        text = f"{type(task).__qualname__}\0{task.name}\0{position.get(task, 0)}\0"
        given = constants.get(task)
        if given:
            for key, value in sorted(given.items()):
                text += f"const {key}={_value_digest(value)}\0"
        if isinstance(task, Constant):
            text += f"literal={_value_digest(task.value)}\0"
        edges = upstream_of.get(task)
        if edges:
            if len(edges) == 1:  # a chain's case: no tuple to sort, written as its repr
                e = edges[0]
                up = e.upstream_task
                text += (f"({e.key or ''!r}, {e.mapped!r}, {e.flattened!r}, {up.slug!r}, "
                         f"{done.get(up) or identity(up)!r})\0")
            else:
                upstream = sorted(
                    (e.key or "", e.mapped, e.flattened, e.upstream_task.slug,
                     identity(e.upstream_task))
                    for e in edges
                )
                for edge in upstream:
                    text += f"{edge!r}\0"
        if isinstance(task, LoopBlock):
            for member in task.members:
                text += f"member {member.slug} {identity(member)}\0"
        visiting.discard(task)
        found = _digested.get(text)
        if found is None:
            found = _digest(text)
        done[task] = found
        return found

    return {task.slug: identity(task) for task in tasks}


# Identities digested in this process, by their text: a flow run again, or built again
# the same way (a script's function that builds it, a scheduler), gives the same texts,
# and looking one up costs a tenth of its SHA-256. Bounded: emptied when full.
_digested: dict[str, str] = {}
_DIGESTED_MAX = 20_000


def _digest(text: str) -> str:
    """The identity whose parts are ``text`` (see :func:`task_identities`), remembered."""
    found = sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if len(_digested) >= _DIGESTED_MAX:
        _digested.clear()
    _digested[text] = found
    return found


def _value_digest(value: Any) -> str:
    try:
        data = dumps(value)
    except Exception:
        data = repr(value).encode("utf-8", "surrogatepass")
    return sha256(data).hexdigest()[:16]
