"""Executors: where task runs execute. ``LocalExecutor`` (default), ``ThreadExecutor``,
``DaskExecutor`` (needs the ``dask`` extra; imported lazily)."""

from iterflow.executors.base import Executor
from iterflow.executors.local import LocalExecutor
from iterflow.executors.threads import ThreadExecutor

__all__ = ["DaskExecutor", "Executor", "LocalExecutor", "ThreadExecutor"]


def __getattr__(name: str):
    if name == "DaskExecutor":  # dask is heavy and optional: import it only when asked
        from iterflow.executors.dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'iterflow.executors' has no attribute {name!r}")
