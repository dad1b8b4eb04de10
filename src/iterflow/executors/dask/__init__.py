"""Run jobs on a Dask cluster (``distributed``): iterflow's scale-out executor.

A job is one task run, every iteration of its loop included, so a looping
task runs on one worker and never costs a round trip per iteration. The
package adds three things around that: sending jobs cheaply, carrying their
events back while they run, and bringing their results back in the right
order -- all while doing little in the client process, which for a
``LocalCluster`` also hosts the scheduler: every CPU cycle the runner spends
there is taken from it.

One module per question, each with its design in its docstring:

- :mod:`~iterflow.executors.dask.executor`: :class:`DaskExecutor`, its life
  cycle and submit / wait / result / cancel; sending jobs in batches and the
  values they share once; jobs that end without a word; lost workers.
- :mod:`~iterflow.executors.dask.worker`: what runs on a worker: the job, its
  events pickled at once and sent in numbered batches, its result pushed on
  the run's topic, the cancel flag a remote loop reads.
- :mod:`~iterflow.executors.dask.connect`: reaching a scheduler (fast, clear
  failures), the local cluster's defaults, what the scheduler keeps.
- :mod:`~iterflow.executors.dask.stream`: the client's end of the event
  stream, putting each job attempt's events back in order before its result.

Scheduling
    A looping job holds its worker thread until the loop ends. Large maps are
    queued on the scheduler and handed to threads as they free up; a job that
    distributed placed behind a long loop is moved to an idle worker by work
    stealing, within about a second.

Costs to know: event batches and pushed results pass through the scheduler,
which keeps the last ``distributed.admin.low-level-log-length`` (1,000)
messages of a topic in memory; the run's topic is dropped when the run ends.
Scripts that start a local cluster must guard their entry point with
``if __name__ == "__main__":``, as for any use of ``distributed`` with process
workers; on a remote cluster, iterflow and the flow's modules must be
importable on the workers.
"""

try:
    import dask.sizeof  # noqa: F401
    import distributed  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "DaskExecutor needs dask and distributed: pip install 'iterflow[dask]'"
    ) from _exc

from iterflow.executors.dask.executor import DaskExecutor

__all__ = ["DaskExecutor"]
