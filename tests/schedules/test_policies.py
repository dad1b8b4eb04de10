"""Catch-up and overlap policies, driven by a clock the test moves, on a real store.

A :class:`FlowServer` is the part of ``serve`` that decides: these tests call
it pass by pass and read what it recorded, without starting any run.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from iterflow import Flow, task
from iterflow.schedules import Cron, Interval
from iterflow.schedules.planning import admit, plan
from iterflow.schedules.server import FlowServer
from iterflow.store import ServeConflict, lease, ticks
from iterflow.store.schema import serve_leases
from iterflow.store.serving import acquire_lease, claim_ticks


@task
def work():
    return 1


def make_flow(**options):
    options.setdefault("schedules", [Cron("0 * * * *", name="hourly")])
    with Flow("etl", **options) as flow:
        work()
    return flow


def server(flow, store, clock, owner="a"):
    return FlowServer(flow, None, store, owner=owner, clock=clock, report=lambda line: None)


def at(hour, minute=0, second=0):
    return datetime(2026, 1, 1, hour, minute, second, tzinfo=UTC)


def outcomes(store):
    return [(t.scheduled, t.outcome) for t in ticks("etl", store=store)]


def downtime(flow, store, clock):
    """Serve from 10:00:30 to 11:00:05 (one launch), stop, come back at 15:30."""
    first = server(flow, store, clock)
    first.start()
    clock.now = at(11, 0, 2)
    assert [launch.scheduled for launch in first.due(active=0)] == [at(11).timestamp()]
    clock.now = at(11, 0, 5)
    first.due(active=0)
    first.release()
    clock.now = at(15, 30)
    second = server(flow, store, clock, owner="b")
    assert second.start() == []
    return second, second.due(active=0)


def test_first_serve_does_not_catch_up_the_past(store, clock):
    fs = server(make_flow(catchup="all"), store, clock)
    fs.start()
    assert fs.due(active=0) == [] and outcomes(store) == []
    assert fs.next_fire() == at(11)


def test_catchup_latest_runs_the_most_recent_missed_tick(store, clock):
    _, launches = downtime(make_flow(), store, clock)
    assert [launch.scheduled for launch in launches] == [at(15).timestamp()]
    assert outcomes(store) == [
        (at(11).timestamp(), "launched"), (at(12).timestamp(), "missed"),
        (at(13).timestamp(), "missed"), (at(14).timestamp(), "missed"),
        (at(15).timestamp(), "launched"),
    ]
    row = ticks("etl", store=store)[-1]
    assert row.run_id == launches[0].run_id and row.schedule == "hourly"


def test_catchup_latest_respects_misfire_grace(store, clock):
    _, launches = downtime(make_flow(misfire_grace=timedelta(minutes=10)), store, clock)
    assert launches == []
    assert [o for _, o in outcomes(store)] == ["launched", "missed", "missed", "missed", "missed"]


def test_catchup_none_runs_nothing_missed(store, clock):
    second, launches = downtime(make_flow(catchup="none"), store, clock)
    assert launches == []
    assert [o for _, o in outcomes(store)][1:] == ["missed"] * 4
    # ... while a tick noticed on time still runs.
    clock.now = at(16, 0, 1)
    assert len(second.due(active=0)) == 1


def test_catchup_all_is_capped_by_max_catchup(store, clock):
    flow = make_flow(catchup="all", max_catchup=2, overlap="allow")
    _, launches = downtime(flow, store, clock)
    assert [launch.scheduled for launch in launches] == [at(14).timestamp(), at(15).timestamp()]
    assert [o for _, o in outcomes(store)][1:] == ["missed", "missed", "launched", "launched"]


def test_a_restart_never_fires_a_tick_twice(store, clock):
    second, _ = downtime(make_flow(catchup="all", overlap="allow"), store, clock)
    second.release()
    third = server(make_flow(catchup="all", overlap="allow"), store, clock, owner="c")
    third.start()
    assert third.due(active=0) == []
    clock.now = at(16, 0, 1)
    assert len(third.due(active=0)) == 1
    scheduled = [s for s, _ in outcomes(store)]
    assert len(scheduled) == len(set(scheduled)) == 6
    # Recording an occurrence again is refused, whoever tries.
    row = {"flow_name": "etl", "schedule": "hourly", "scheduled": at(15).timestamp(),
           "outcome": "launched", "run_id": "x"}
    assert claim_ticks(store, [row]) == [False]


def test_serve_that_stopped_before_any_tick_still_counts_its_downtime(store, clock):
    flow = make_flow(schedules=[Cron("0 3 * * *", name="nightly")])
    fs = server(flow, store, clock)
    fs.start()
    clock.now = at(10, 5)
    fs.due(active=0)
    fs.release()  # never fired: only the lease says how far it got
    clock.now = datetime(2026, 1, 3, 9, tzinfo=UTC)
    again = server(flow, store, clock, owner="b")
    again.start()
    launches = again.due(active=0)
    assert [launch.scheduled for launch in launches] == [
        datetime(2026, 1, 3, 3, tzinfo=UTC).timestamp()
    ]
    assert [o for _, o in outcomes(store)] == ["missed", "launched"]


def test_overlap_skip_records_the_tick(store, clock):
    fs = server(make_flow(), store, clock)
    fs.start()
    clock.now = at(11, 0, 1)
    assert fs.due(active=1) == []
    tick = ticks("etl", store=store)[0]
    assert tick.outcome == "skipped" and "in flight" in tick.message


def test_overlap_queue_keeps_one_tick_waiting(store, clock):
    fs = server(make_flow(overlap="queue"), store, clock)
    fs.start()
    clock.now = at(11, 0, 1)
    assert fs.due(active=1) == []
    clock.now = at(12, 0, 1)
    assert fs.due(active=1) == []
    assert [o for _, o in outcomes(store)] == ["queued", "skipped"]
    clock.now = at(12, 10)
    launches = fs.due(active=0)  # the run in flight ended: the waiting tick goes
    assert [launch.scheduled for launch in launches] == [at(11).timestamp()]
    assert [o for _, o in outcomes(store)] == ["launched", "skipped"]
    assert ticks("etl", store=store)[0].run_id == launches[0].run_id


def test_overlap_allow_up_to_max_active_runs(store, clock):
    fs = server(make_flow(overlap="allow", max_active_runs=2), store, clock)
    fs.start()
    clock.now = at(11, 0, 1)
    assert len(fs.due(active=1)) == 1
    clock.now = at(12, 0, 1)
    assert fs.due(active=2) == []
    assert [o for _, o in outcomes(store)] == ["launched", "skipped"]


def test_interval_schedule_and_parameters(store, clock):
    flow = make_flow(schedules=[Interval(timedelta(minutes=20), parameters={})])
    fs = server(flow, store, clock)
    fs.start()
    clock.now = at(10, 20, 0)
    (launch,) = fs.due(active=0)
    assert launch.scheduled == at(10, 20).timestamp() and launch.parameters == {}


def test_pure_policies():
    now = at(12)
    due = [at(9), at(10), at(11), at(12)]
    assert [a for _, a in plan(due, now, catchup="all", max_catchup=5)] == ["launch"] * 4
    assert [a for _, a in plan(due, now, catchup="all", misfire_grace=3600)] == [
        "missed", "missed", "launch", "launch"]
    assert [a for _, a in plan(due[:-1], now, catchup="none")] == ["missed"] * 3
    assert admit("queue", 1, waiting=True) == "skip"
    assert admit("allow", 5) == "launch"


# -- leases ---------------------------------------------------------------------------------
def test_a_second_serve_is_refused_with_the_first_ones_pid_and_host(store, clock):
    import os
    import socket

    first = server(make_flow(), store, clock)
    first.start()
    with pytest.raises(ServeConflict) as caught:
        server(make_flow(), store, clock, owner="b").start()
    assert f"process {os.getpid()} on {socket.gethostname()}" in str(caught.value)
    first.release()
    server(make_flow(), store, clock, owner="b").start()
    assert lease("etl", store=store).owner == "b"


def test_a_dead_serve_is_taken_over(store, clock):
    # A serve on this host whose process is gone, though its heartbeat is fresh.
    acquire_lease(store, "etl", "dead")
    gone = subprocess.Popen(["true"])
    gone.wait()
    store.write(lambda conn: conn.execute(
        sa.update(serve_leases).where(serve_leases.c.flow_name == "etl").values(pid=gone.pid)
    ))
    held = lease("etl", store=store)
    assert held.owner == "dead" and held.stopped is None
    fs = server(make_flow(), store, clock, owner="alive")
    fs.start()
    assert lease("etl", store=store).owner == "alive"


# -- crashes ----------------------------------------------------------------------------------
def test_a_crashed_run_is_resumed_once_then_left(store, clock):
    seen = []
    flow = make_flow(on_failure=[lambda flow, state: seen.append(state), lambda *a: 1 / 0])
    fs = server(flow, store, clock)
    fs.start()
    clock.now = at(11, 0, 1)
    (launch,) = fs.due(active=0)
    (resume,) = fs.crashed(launch.run_id)
    assert resume.resume and resume.run_id == launch.run_id
    assert ticks("etl", store=store)[0].resumes == 1
    assert fs.crashed(launch.run_id) == []  # crashed again: left, hooks called (one raises)
    assert len(seen) == 1 and seen[0].is_failed() and seen[0].run_id == launch.run_id


def test_on_crash_leave(store, clock):
    fs = server(make_flow(on_crash="leave"), store, clock)
    fs.start()
    clock.now = at(11, 0, 1)
    (launch,) = fs.due(active=0)
    assert fs.crashed(launch.run_id) == []
