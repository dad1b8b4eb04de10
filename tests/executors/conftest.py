"""Fixtures for the executor tests.

- ``dask_cluster`` (module scope): one real ``distributed.LocalCluster`` with
  two single-threaded process workers, shared by a test module's Dask tests.
- ``executor``: every executor, Dask included (it overrides the suite-wide
  fixture, which covers only the in-process ones). A fresh executor per test;
  the Dask one joins ``dask_cluster`` by address.
- ``parallel_executor``: the executors that run jobs in parallel.
"""

from __future__ import annotations

import logging

import pytest

from iterflow.executors import LocalExecutor, ThreadExecutor

DASK = pytest.param("dask", marks=pytest.mark.dask)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


def make_executor(kind: str, request: pytest.FixtureRequest):
    if kind == "local":
        return LocalExecutor()
    if kind == "threads":
        return ThreadExecutor(max_workers=4)
    from iterflow.executors import DaskExecutor

    return DaskExecutor(address=request.getfixturevalue("dask_cluster").scheduler_address)


@pytest.fixture(params=["local", "threads", DASK])
def executor(request):
    """Each executor; a flow must give the same results and states on all of them."""
    return make_executor(request.param, request)


@pytest.fixture(params=["threads", DASK])
def parallel_executor(request):
    """Each executor that runs independent jobs at the same time."""
    return make_executor(request.param, request)
