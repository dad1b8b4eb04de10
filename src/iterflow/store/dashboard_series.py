"""A loop's numbers per iteration, for the dashboard's charts (read, never unpickled).

:func:`loop_series` answers "what did this loop produce, iteration by
iteration?" from what the store already keeps: each ``Looped`` state's
result *preview* (its ``repr``). A number is one series (``result``); a dict
of numbers is one series per key. Anything else is no series. Previews are
parsed with :func:`ast.literal_eval` — literals only, nothing is run or
unpickled — after a fast path for plain numbers.

Only the ``Looped`` rows of one task run in an index range are read, through
``ix_state_transitions_iteration``; a chart's downsampling happens on top of
this (:mod:`iterflow.ui.charts`).

>>> loop_series(store, task_key, start=0, end=999)     # doctest: +SKIP
{'loss': ([0, 1, 2], [0.9, 0.5, 0.31])}
"""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from iterflow.store.schema import state_transitions as s

if TYPE_CHECKING:
    from iterflow.store.runstore import RunStore

__all__ = ["loop_series", "numbers_in"]

#: A preview longer than this is not parsed (a big value is not a chart's number).
_LONGEST = 2_000


def numbers_in(preview: str | None) -> dict[str, float] | None:
    """The numbers a result preview holds: ``{"result": x}``, a dict's numeric items, or None.

    >>> numbers_in("0.25"), numbers_in("{'loss': 1, 'acc': 0.5, 'name': 'x'}")
    ({'result': 0.25}, {'loss': 1.0, 'acc': 0.5})
    >>> numbers_in("'text'") is None, numbers_in("nan") is None
    (True, True)
    """
    if not preview or len(preview) > _LONGEST:
        return None
    try:
        x = float(preview)
    except ValueError:
        pass
    else:
        return {"result": x} if math.isfinite(x) else None
    if not preview.startswith("{"):
        return None
    try:
        value = ast.literal_eval(preview)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    found = {
        str(k): float(v) for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return found or None


def loop_series(store: RunStore, task_key: int, *, start: int | None = None,
                end: int | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """Per series name: iteration indexes and values from task run ``task_key``'s results.

    ``start``/``end`` bound the iteration index (inclusive). Series come in
    the order their names first appear.
    """

    def query(conn: sa.Connection) -> list[Any]:
        where = [s.c.task_run == task_key, s.c.kind == "Looped"]
        if start is not None:
            where.append(s.c.loop_index >= start)
        if end is not None:
            where.append(s.c.loop_index <= end)
        return conn.execute(
            sa.select(s.c.loop_index, s.c.preview).where(*where).order_by(s.c.loop_index, s.c.id)
        ).all()

    series: dict[str, tuple[list[int], list[float]]] = {}
    for index, preview in store.read(query):
        numbers = numbers_in(preview)
        if numbers is None:
            continue
        for name, value in numbers.items():
            xs, ys = series.setdefault(name, ([], []))
            if xs and xs[-1] == index:  # a retried iteration: its last value counts
                ys[-1] = value
            else:
                xs.append(index)
                ys.append(value)
    return series
