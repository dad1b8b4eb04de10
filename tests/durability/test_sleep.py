"""``iterflow.sleep`` is durable: after SIGKILL and resume only the time left is waited.

Real processes: a polling loop sleeps 2 s per iteration and is killed during
its second sleep; the resumed process must not wait the whole 2 s again.
"""

from __future__ import annotations

import signal
import time

from iterflow.durable import parse_sleep
from iterflow.store import list_runs, logs, open_store

from .helpers import kill, wait_for

POLLING = """
SLEEP = float(os.environ.get("SLEEP", "2"))
LATER = float(os.environ.get("LATER", SLEEP))  # the sleeps after iteration 0


@task
def poll():
    i = iterflow.context.loop_index
    mark("sleep", i, repr(time.time()))
    iterflow.sleep(SLEEP if i == 0 else LATER)
    mark("woke", i, repr(time.time()))
    if i < 2:
        raise LOOP(result=i)
    return i


with Flow("polling") as flow:
    poll()
"""


def marks(script, name):
    return [(int(i), float(t)) for i, t in script.side(name)]


def committed_wake_ups(store_url) -> list[float]:
    """The wake-up times the store holds for the (one) run so far: one per sleep recorded."""
    with open_store(store_url) as store:
        runs = list_runs(store=store)
        if not runs:
            return []
        found = [parse_sleep(e.message) for e in logs(runs[0].run_id, store=store)]
    return [wake for wake, _call in filter(None, found)]


def test_a_killed_sleep_waits_only_what_is_left_after_resume(flow_script, store_url):
    script = flow_script(POLLING, store_url)
    started = time.time()
    first = script.start("run")
    wait_for(lambda: any(i == 1 for i, _ in marks(script, "sleep")), "the second sleep",
             proc=first, script=script, timeout=60)
    # Into the sleep, its wake-up time committed (waited for: a fixed 0.6 s was not
    # always enough for the batch on a loaded machine).
    wait_for(lambda: len(committed_wake_ups(store_url)) >= 2, "the second wake-up time",
             proc=first, script=script, timeout=60)
    kill(first, signal.SIGKILL)
    with open_store(store_url) as store:
        run_id = list_runs(store=store)[0].run_id
        lines = [e.message for e in logs(run_id, store=store)]
    assert any(m.startswith("sleeping until ") for m in lines)
    out = script.run("resume", run_id)
    ended = time.time()
    assert out["state"] == "Success" and out["results"] == {"poll": 2}
    sleeps, woke = marks(script, "sleep"), marks(script, "woke")
    # Iteration 1 ran again in the resumed process (its sleep was interrupted) ...
    assert [i for i, _ in sleeps] == [0, 1, 1, 2]
    assert [i for i, _ in woke] == [0, 1, 2]
    again, woke_1 = sleeps[2][1], woke[1][1]
    # ... and waited only what was left of the 2 s (about 1.4 s, or nothing if the new
    # process took longer than that to start), not 2 s again.
    assert woke_1 - again < 1.8
    assert abs(woke_1 - (sleeps[1][1] + 2.0)) < 0.3 or woke_1 - again < 0.1
    # From the first sleep to the last wake-up: the sleeps once (6 s), plus only the time
    # the resumed process took to start beyond the wake-up time it found; slept twice it
    # would be 8 s and more.
    late = max(0.0, again - (sleeps[1][1] + 2.0))
    assert woke[2][1] - sleeps[0][1] < 6 + late + 0.8
    assert ended - started < 60
    # The resumed sleep said so again (when time was left), with the wake-up time
    # first recorded: `show` and the progress display read the latest line.
    with open_store(store_url) as store:
        wakes = [parse_sleep(e.message) for e in logs(run_id, store=store)]
    wakes = [w for w in wakes if w is not None]
    assert len({w[0] for w in wakes}) == 3  # three sleeps, three wake-up times
    if woke_1 - again >= 0.1:
        assert len(wakes) == 4  # iteration 1's, recorded before the kill and after


def test_a_resume_after_the_wake_up_time_continues_at_once(flow_script, store_url):
    script = flow_script(POLLING, store_url)
    first = script.start("run", SLEEP="3", LATER="0")
    wait_for(lambda: marks(script, "sleep"), "the first sleep", proc=first, script=script)
    # Its wake-up time committed (waited for, not a fixed pause), then past.
    (wake,) = wait_for(lambda: committed_wake_ups(store_url), "the wake-up time",
                       proc=first, script=script, timeout=60)
    kill(first, signal.SIGKILL)
    time.sleep(max(0.0, wake - time.time()) + 0.1)  # the recorded wake-up time has passed
    with open_store(store_url) as store:
        run_id = list_runs(store=store)[0].run_id
    start = time.time()
    script.run("resume", run_id, SLEEP="3", LATER="0")
    sleeps, woke = marks(script, "sleep"), marks(script, "woke")
    assert [i for i, _ in sleeps][:2] == [0, 0]
    assert woke[0][1] - sleeps[1][1] < 0.2  # the iteration-0 sleep did not wait again
    assert time.time() - start < 10


def test_sigterm_interrupts_a_sleep_promptly(flow_script, store_url):
    script = flow_script(POLLING, store_url)
    proc = script.start("run", SLEEP="60")
    wait_for(lambda: marks(script, "sleep"), "the sleep", proc=proc, script=script)
    time.sleep(0.3)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.time() - sent < 3
    with open_store(store_url) as store:
        assert list_runs(store=store)[0].state == "Cancelled"


def test_show_says_sleeping_until(flow_script, store_url):
    import subprocess
    import sys

    script = flow_script(POLLING, store_url)
    proc = script.start("run", SLEEP="60")
    wait_for(lambda: marks(script, "sleep"), "the sleep", proc=proc, script=script)
    wake = marks(script, "sleep")[0][1] + 60

    def shown():
        with open_store(store_url) as store:
            run_id = list_runs(store=store)[0].run_id
        out = subprocess.run([sys.executable, "-m", "iterflow", "show", run_id],
                             capture_output=True, text=True, timeout=60,
                             env={**script.env, "NO_COLOR": "1", "COLUMNS": "200"})
        return "sleeping until" in out.stdout and out.stdout

    text = wait_for(shown, "show to say the task sleeps", timeout=20)
    assert time.strftime("%H:%M", time.localtime(wake)) in text
    kill(proc, signal.SIGKILL)


RETRYING = """
@task(max_retries=1, retry_delay=2)
def flaky():
    i = iterflow.context.loop_index
    attempt = iterflow.context.task_run_count
    mark("attempt", i, attempt, repr(time.time()))
    if i == 1 and attempt == 1:
        raise ValueError("not yet")
    if i < 1:
        raise LOOP(result=i)
    return i


with Flow("retrying") as flow:
    flaky()
"""


def test_retry_delay_is_durable(flow_script, store_url):
    script = flow_script(RETRYING, store_url)
    first = script.start("run")
    wait_for(lambda: any(r[0] == "1" for r in script.side("attempt")), "iteration 1 to fail",
             proc=first, script=script)
    # Into the 2 s retry delay, its wake-up time committed (waited for, not a fixed pause).
    wait_for(lambda: committed_wake_ups(store_url), "the retry's wake-up time", proc=first,
             script=script, timeout=60)
    kill(first, signal.SIGKILL)
    with open_store(store_url) as store:
        run_id = list_runs(store=store)[0].run_id
    failed_at = float(script.side("attempt")[1][2])
    assert script.run("resume", run_id)["results"] == {"flaky": 1}
    attempts = [(int(i), int(n), float(t)) for i, n, t in script.side("attempt")]
    # The resumed process fails iteration 1 again, then waits what is left of the delay.
    assert [(i, n) for i, n, _ in attempts] == [(0, 1), (1, 1), (1, 1), (1, 2)]
    retried, again = attempts[3][2], attempts[2][2]
    assert retried - again < 1.6 or retried - failed_at < 2.4
