"""Connecting to a Dask cluster: a client for an address, or a local cluster of our own.

:func:`join` reaches a scheduler at an address and fails fast and clearly
when it cannot: a refused or unresolvable TCP address fails at once (where
distributed would keep retrying until its timeout), and a peer that accepts
the connection and then says nothing -- which distributed's connect timeout
does not cover, so a ``Client`` would wait forever -- is asked who it is,
with a deadline, before a ``Client`` is built (:func:`probe`). The errors
name the address and say what to check.

:func:`start_local_cluster` starts the ``distributed.LocalCluster`` a
``DaskExecutor()`` without an address runs on, with iterflow's defaults
(:data:`LOCAL_CLUSTER_DEFAULTS`): process workers, one per core, one thread
each -- a looping job holds its thread until its loop ends -- no dashboard,
and quiet logs.

:func:`forget_topic` runs on the scheduler, which keeps the recent messages
of every topic in memory (``distributed.admin.low-level-log-length`` of
them): a run's events and results would otherwise stay there, in the
driver's own memory when the scheduler is a local cluster's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import distributed
from distributed.comm import connect
from distributed.comm.addressing import parse_address, parse_host_port

from iterflow.errors import ExecutorError

__all__ = ["LOCAL_CLUSTER_DEFAULTS", "forget_topic", "join", "probe", "start_local_cluster"]

#: What ``DaskExecutor(**cluster_kwargs)`` starts, unless ``cluster_kwargs`` say otherwise
#: (``n_workers`` defaults to the number of cores).
LOCAL_CLUSTER_DEFAULTS: dict[str, Any] = {
    "processes": True,
    "threads_per_worker": 1,
    "dashboard_address": None,
    "silence_logs": logging.ERROR,
}


def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout and asyncio's are TimeoutErrors
        return f"no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


async def _identity(address: str, timeout: float) -> Any:
    comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def probe(address: str, timeout: float) -> Any:
    """The scheduler's ``identity`` reply, within ``timeout`` seconds.

    Runs on its own thread with its own event loop, so it works from any
    caller, one with a running event loop (a notebook) included.
    """
    box: dict[str, Any] = {}

    def ask() -> None:
        try:
            box["reply"] = asyncio.run(_identity(address, timeout))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=ask, name="iterflow-dask-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if "error" in box:
        raise box["error"]
    if "reply" not in box:
        raise TimeoutError
    return box["reply"]


def join(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``, or a clear ExecutorError."""

    def unreachable(why: str) -> ExecutorError:
        return ExecutorError(
            f"DaskExecutor could not reach a Dask scheduler at {address!r} ({why}). "
            f"Check that a scheduler is running there (start one with `dask scheduler`) "
            f"and that the address is right, e.g. 'tcp://10.0.0.5:8786'; or use "
            f"DaskExecutor() without an address to start a local cluster."
        )

    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":
            host, port = parse_host_port(location, default_port=8786)
    except (ValueError, TypeError) as exc:
        raise unreachable(f"not a valid address: {exc}") from exc
    if scheme == "tcp":
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            raise unreachable(_why(exc, timeout)) from exc
    try:
        identity = probe(address, timeout)
    except Exception as exc:
        raise unreachable(_why(exc, timeout)) from exc
    if not isinstance(identity, dict) or identity.get("type") != "Scheduler":
        raise unreachable(f"the server there is not a Dask scheduler: {identity!r:.200}")
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise unreachable(_why(exc, timeout)) from exc


def start_local_cluster(cluster_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``(client, cluster)``: a new LocalCluster with iterflow's defaults, and its client."""
    kwargs = {
        "n_workers": os.cpu_count() or 2,
        **LOCAL_CLUSTER_DEFAULTS,
        **cluster_kwargs,
    }
    try:
        cluster = distributed.LocalCluster(**kwargs)
    except Exception as exc:
        raise ExecutorError(
            f"DaskExecutor could not start a local Dask cluster with {kwargs!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return client, cluster


def forget_topic(topic: str, dask_scheduler: Any = None) -> None:
    """Run on the scheduler: drop the messages it keeps of ``topic`` (private API)."""
    broker = getattr(dask_scheduler, "_broker", None)
    topics = getattr(broker, "_topics", None)
    if topics is not None:
        topics.pop(topic, None)


@contextlib.contextmanager
def quiet_in_this_thread(name: str) -> Iterator[None]:
    """Drop what logger ``name`` says from this thread (other threads still speak).

    distributed logs a traceback when a batch of jobs cannot be pickled; the
    executor then finds the jobs at fault and fails each with a clear message,
    so the traceback would only be noise.
    """
    here = threading.get_ident()

    def elsewhere(record: logging.LogRecord) -> bool:
        return record.thread != here

    target = logging.getLogger(name)
    target.addFilter(elsewhere)
    try:
        yield
    finally:
        target.removeFilter(elsewhere)
