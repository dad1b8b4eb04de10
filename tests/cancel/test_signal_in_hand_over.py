"""A signal that lands while a job is handed to the executor still cancels that job.

The signal's exception is raised wherever the main thread is. Landing between
the executor taking a job and the runner recording its future, it used to lose
the job: it ran on, not named among the jobs left running, not stopped. Here an
executor sends the signal to its own process from inside ``submit``, after the
job has started, so the exception comes at exactly that point, every time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from iterflow import Flow, task
from iterflow.errors import RunCancelled
from iterflow.executors import ThreadExecutor
from iterflow.run_signals import signals_held, sigterm_cancels


class SignalInSubmit(ThreadExecutor):
    """Sends ``signum`` to this process inside the first ``submit``, once its job runs."""

    def __init__(self, signum: int, started: threading.Event) -> None:
        super().__init__(max_workers=2)
        self.signum = signum
        self.started = started
        self.sent = False

    def submit(self, fn, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        if not self.sent:
            self.sent = True
            assert self.started.wait(10), "the job never started"
            os.kill(os.getpid(), self.signum)
            # Python runs the handler at its next check: within these calls.
            for _ in range(100):
                len(str(future))
        return future


@pytest.fixture
def ctrl_c_as_in_a_terminal():
    """A suite started without job control hands its processes SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("signum", "raised"), [
    (signal.SIGTERM, RunCancelled),
    (signal.SIGINT, KeyboardInterrupt),
])
def test_the_job_handed_over_as_the_signal_lands_is_named_and_cancelled(
    signum, raised, caplog, ctrl_c_as_in_a_terminal
):
    started, release = threading.Event(), threading.Event()

    @task
    def download():
        started.set()
        release.wait(30)
        return 1

    with Flow("hand-over") as flow:
        download()

    executor = SignalInSubmit(signum, started)
    try:
        with caplog.at_level(logging.WARNING, logger="iterflow.executors"), \
                pytest.raises(raised):
            flow.run(executor=executor, store=None)
    finally:
        release.set()
    assert executor.sent
    left = [r.getMessage() for r in caplog.records
            if "still running on a thread that cannot be stopped" in r.getMessage()]
    assert len(left) == 1 and "/download" in left[0], caplog.text


def test_a_hold_defers_the_exception_to_its_end_and_an_error_inside_gives_way_to_it():
    hold = signals_held()
    previous = signal.getsignal(signal.SIGTERM)
    reached = []
    with sigterm_cancels():
        with pytest.raises(RunCancelled), hold:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                len(str(reached))
            reached.append("end of the hold")
        assert reached == ["end of the hold"]
        # An ordinary error leaving the hold gives way to the cancel that waited.
        with pytest.raises(RunCancelled) as caught, hold:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                len(str(reached))
            raise ValueError("a job could not be sent")
        assert isinstance(caught.value.__context__, ValueError)
        # Outside a hold the exception is raised at once.
        with pytest.raises(RunCancelled):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                len(str(reached))
    assert signal.getsignal(signal.SIGTERM) is previous
