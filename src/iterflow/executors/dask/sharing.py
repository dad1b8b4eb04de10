"""Values many jobs share, sent to the workers once.

distributed pickles each job on its own, so a value inside many jobs travels
once per job through the scheduler: a 10,000-item parameter mapped over
10,000 children is 10^8 items. The runner passes what jobs hold in common as
``shared`` keyword arguments (see
:meth:`iterflow.executors.base.Executor.submit`): the run's context (the
run's parameters in it), a mapped task's ``unmapped(...)`` inputs. Such a
value -- or a value inside such a dict -- when it is at least
``share_limit`` big (``dask.sizeof``), is pickled once into a
:class:`~iterflow.executors.dask.worker.Packed` box and scattered to every
worker; the jobs depend on its future instead, and
:meth:`~iterflow.executors.dask.worker.WorkerCall.keywords` puts it back in
place on the worker. A value is weighed once per run: big ones are
remembered by identity, and the dict last passed under each name (the run's
context is the same dict for every job of a scope).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask.sizeof import sizeof

from iterflow.errors import SerializationError
from iterflow.executors.dask.worker import CANCEL, Packed, root_cause
from iterflow.pickling import dumps, type_name

__all__ = ["Sharing"]

# Values of these types are never big enough to be worth sharing.
_SMALL = frozenset({type(None), bool, int, float, complex})


class Sharing:
    """What one run's jobs share: big values scattered once, remembered for the run."""

    def __init__(self, client: Any, limit: int) -> None:
        self.client = client
        self.limit = limit
        # id(value) -> (value, its future) for the big values sent once; kept for the run
        self._shared: dict[int, tuple[Any, Any]] = {}
        # name -> (the last dict passed under it, what was sent, places, futures)
        self._last: dict[str, tuple[dict, dict, list, list]] = {}

    def split(self, shared: Mapping[str, Any] | None) -> tuple[Any, tuple, list]:
        """Take big values out of a job's shared arguments, to send them to the workers once.

        A value inside N jobs would travel N times through the scheduler: a
        10,000-item parameter mapped over 10,000 children is 10^8 items. A
        value at least ``limit`` big is scattered to every worker
        once instead (``broadcast=True``, so it does not pull every job towards
        one worker) and the job depends on its future. Returns the arguments
        to send, where each scattered value goes back (see
        :class:`~iterflow.executors.dask.worker.WorkerCall`), and their futures.
        The cancel flag is left out: the executor deals with it.
        """
        if not shared:
            return None, (), []
        send: dict[str, Any] = {}
        places: list[tuple] = []
        futures: list[Any] = []
        for name, value in shared.items():
            if name == CANCEL:
                continue
            if type(value) is dict:
                send[name] = self._split_dict(name, value, places, futures)
                continue
            future = self._share(value, f"its {name}")
            if future is None:
                send[name] = value
            else:
                send[name] = None
                places.append((name,))
                futures.append(future)
        return send, tuple(places), futures

    def _split_dict(self, name: str, value: dict, places: list, futures: list) -> dict:
        """``value`` with its big items taken out (added to ``places`` and ``futures``).

        The dict a job got under ``name`` is remembered until another comes:
        the run's context is the same dict for every job of a scope, so it is
        looked at once; a mapped child's inputs are a dict of its own, looked
        at item by item (the big values it shares with its siblings are
        remembered by :meth:`_share`).
        """
        last = self._last.get(name)
        if last is not None and last[0] is value:
            places.extend(last[2])
            futures.extend(last[3])
            return last[1]
        slim = None
        mine: list[tuple] = []
        theirs: list[Any] = []
        for item, inner in value.items():
            if type(inner) in _SMALL:
                continue
            future = self._share(inner, f"the value of {item!r} in its {name.replace('_', ' ')}")
            if future is not None:
                if slim is None:
                    slim = dict(value)
                slim[item] = None
                mine.append((name, item))
                theirs.append(future)
        sent = value if slim is None else slim
        self._last[name] = (value, sent, mine, theirs)
        places.extend(mine)
        futures.extend(theirs)
        return sent

    def _share(self, value: Any, what: str) -> Any:
        """The future of ``value`` scattered to the workers, or None when it is small.

        Big values are remembered for the run, so each is sent once.
        """
        known = self._shared.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        try:
            big = sizeof(value) >= self.limit
        except Exception:  # a broken __sizeof__: send the value with the job
            big = False
        future = None
        if big:
            try:
                packed = Packed(dumps(value))
            except Exception as exc:
                cause = root_cause(exc)
                raise SerializationError(
                    f"{what}, a {type_name(value)}, cannot be pickled to send it to the Dask "
                    f"cluster ({type(cause).__name__}: {cause}); make it picklable (with "
                    f"cloudpickle), or run the flow on LocalExecutor or ThreadExecutor"
                ) from exc
            future = self.client.scatter([packed], broadcast=True, hash=False)[0]
            self._shared[id(value)] = (value, future)
        return future

