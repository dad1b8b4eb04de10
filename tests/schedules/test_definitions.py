"""Cron and Interval: next fire times, DST days, and bad input refused at definition."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from iterflow import Flow, Parameter, task
from iterflow.errors import FlowDefinitionError, IterflowError, ParameterError
from iterflow.schedules import Cron, Interval, Schedule, ScheduleError

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        out.append(moment)
    return out


@task
def noop(x=None):
    return x


# -- next times ------------------------------------------------------------------------
def test_cron_next_times_in_utc_by_default():
    assert fires(Cron("*/15 * * * *"), utc(2026, 1, 1, 10, 7, 30), 3) == [
        utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 10, 45),
    ]
    # Strictly after: a fire time is not its own successor.
    assert Cron("0 * * * *").next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)


def test_cron_reads_its_time_zone():
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
    daily = Cron("0 9 * * *", tz="Europe/Paris")
    assert daily.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)
    assert daily.next_after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)


def test_cron_with_seconds_and_names():
    assert fires(Cron("*/20 * * * * *"), utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40),
    ]
    # 2026-01-02 is a Friday; the next Monday is the 5th.
    assert Cron("0 6 * * MON").next_after(utc(2026, 1, 2)) == utc(2026, 1, 5, 6)


def test_interval_grid_from_its_anchor():
    every = Interval(timedelta(days=1), anchor="2026-01-01T03:00Z")
    assert fires(every, utc(2026, 3, 5, 12), 2) == [utc(2026, 3, 6, 3), utc(2026, 3, 7, 3)]
    # Times before the anchor lie on the same grid.
    assert every.next_after(utc(2025, 12, 30, 4)) == utc(2025, 12, 31, 3)
    assert every.next_after(utc(2026, 1, 1, 3)) == utc(2026, 1, 2, 3)


def test_interval_without_anchor_is_aligned_to_the_epoch():
    hourly = Interval(timedelta(hours=1))
    assert hourly.next_after(utc(2026, 5, 1, 10, 59, 59)) == utc(2026, 5, 1, 11)
    assert Interval(1.5).next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 1, 500000)
    assert hourly.name == "every 1h"


def test_next_lists_the_coming_fire_times():
    assert Interval(timedelta(minutes=30)).next(3, after=utc(2026, 1, 1, 10, 10)) == [
        utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 11), utc(2026, 1, 1, 11, 30),
    ]
    (upcoming,) = Cron("* * * * *").next()
    assert timedelta(0) < upcoming - datetime.now(UTC) <= timedelta(minutes=1)


def test_fire_times_lists_a_window_and_naive_times_are_utc():
    cron = Cron("0 */6 * * *")
    assert list(cron.fire_times(datetime(2026, 1, 1), datetime(2026, 1, 2))) == [
        utc(2026, 1, 1, 6), utc(2026, 1, 1, 12), utc(2026, 1, 1, 18), utc(2026, 1, 2),
    ]


def test_schedules_pickle_and_round_trip_as_data():
    cron = Cron("30 2 * * *", tz="Europe/Paris", parameters={"full": False})
    assert pickle.loads(pickle.dumps(cron)) == cron
    again = Schedule.from_dict(cron.as_dict())
    assert again == cron and again.next_after(utc(2026, 1, 1)) == cron.next_after(utc(2026, 1, 1))
    interval = Interval(timedelta(minutes=5), anchor="2026-01-01T00:01Z", name="five")
    assert Schedule.from_dict(interval.as_dict()) == interval


# -- daylight saving time (Europe/Paris: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00)
def test_spring_forward_fixed_time_runs_after_the_gap():
    job = Cron("30 2 * * *", tz="Europe/Paris")
    got = [t.astimezone(PARIS) for t in fires(job, utc(2026, 3, 27, 12), 3)]
    assert [t.isoformat() for t in got] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that day: first moment after
        "2026-03-30T02:30:00+02:00",
    ]


def test_spring_forward_hourly_skips_the_missing_hour():
    hourly = Cron("0 * * * *", tz="Europe/Paris")
    got = fires(hourly, datetime(2026, 3, 29, 0, 30, tzinfo=PARIS), 3)
    assert [t.astimezone(PARIS).isoformat() for t in got] == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00",
    ]
    # Real time: one hour between each, the skipped local hour never existed.
    assert got[1] - got[0] == timedelta(hours=1)


def test_fall_back_fixed_time_runs_once():
    job = Cron("30 2 * * *", tz="Europe/Paris")
    got = fires(job, utc(2026, 10, 24, 12), 2)
    assert [t.astimezone(PARIS).isoformat() for t in got] == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
    ]
    # Asked from inside the repeated hour, after the first 02:30: not again that day.
    second_pass = datetime(2026, 10, 25, 2, 45, fold=1, tzinfo=PARIS)
    assert job.next_after(second_pass) == utc(2026, 10, 26, 1, 30)


def test_fall_back_hourly_runs_in_both_repeated_hours():
    hourly = Cron("0 * * * *", tz="Europe/Paris")
    got = fires(hourly, utc(2026, 10, 24, 23, 30), 4)  # 01:30 Paris, summer time
    assert [t.astimezone(PARIS).isoformat() for t in got] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(got))


def test_interval_counts_real_time_across_dst():
    every = Interval(timedelta(hours=24), anchor=datetime(2026, 3, 28, 3, tzinfo=PARIS))
    assert every.next_after(utc(2026, 3, 28, 12)).astimezone(PARIS).hour == 4


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["not a cron", "61 * * * *", "* * * *", "", "0 0 31 2 *"])
def test_invalid_cron_is_refused_at_once(expr):
    with pytest.raises(ScheduleError) as caught:
        Cron(expr)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, IterflowError)
    assert "cron" in str(caught.value).lower()


def test_unknown_time_zone_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Cron("0 * * * *", tz="Mars/Olympus")


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-5), "1h", float("nan")])
def test_bad_interval_is_refused(bad):
    with pytest.raises(ScheduleError):
        Interval(bad)


def test_bad_anchor_is_refused():
    with pytest.raises(ScheduleError, match="not an ISO 8601 time"):
        Interval(timedelta(hours=1), anchor="yesterday")


def test_required_parameter_without_default_is_refused_when_the_flow_is_defined():
    with pytest.raises(ParameterError) as caught, Flow("nightly", schedules=[Cron("0 3 * * *")]):
        noop(Parameter("day"))
    message = str(caught.value)
    assert "'nightly'" in message and "cron 0 3 * * *" in message and "day" in message
    assert isinstance(caught.value, FlowDefinitionError) and isinstance(caught.value, ValueError)


def test_a_schedule_may_give_the_required_parameter():
    with Flow("nightly", schedules=[Cron("0 3 * * *", parameters={"day": "today"})]) as flow:
        noop(Parameter("day"))
    assert flow.schedules[0].parameters == {"day": "today"}


def test_unknown_schedule_parameter_is_refused():
    flow = Flow("nightly", schedules=[Interval(60, parameters={"dya": 1})])
    with pytest.raises(ParameterError, match=r"unknown parameter.*dya"), flow:
        noop(Parameter("day", default=1))


@pytest.mark.parametrize(
    ("option", "value"),
    [("catchup", "some"), ("overlap", "wait"), ("on_crash", "retry"), ("max_catchup", 0),
     ("max_active_runs", -1), ("misfire_grace", -1), ("on_failure", [42]),
     ("schedules", ["0 * * * *"])],
)
def test_bad_flow_options_are_refused(option, value):
    with pytest.raises(ScheduleError, match="flow 'f'"):
        Flow("f", **{option: value})


def test_two_schedules_with_one_name_are_refused():
    with pytest.raises(ScheduleError, match="distinct names"):
        Flow("f", schedules=[Cron("0 * * * *"), Cron("0 * * * *", parameters={"x": 1})])


def test_flow_options_defaults():
    flow = Flow("f", schedules=[Cron("0 * * * *")], misfire_grace=timedelta(minutes=2))
    assert (flow.catchup, flow.overlap, flow.on_crash) == ("latest", "skip", "resume")
    assert (flow.max_catchup, flow.max_active_runs, flow.misfire_grace) == (5, None, 120.0)
    assert flow.on_failure == []
