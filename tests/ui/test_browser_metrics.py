"""Metric charts in a real browser (Debian's Chromium driven by Playwright).

A real ``uvicorn`` server on a real store: a flow run whose loop logged three
metrics per iteration, and a run written live while the page watches it. See
``test_browser.py`` for how the browser is found (never downloaded).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.core.state import Looped, Running, Success
from iterflow.events import FlowRunEvent, MetricEvent, TaskRunEvent
from iterflow.store import open_store
from tests.ui.serving import serving
from tests.ui.test_browser import browser, page, shoot, wait_until  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIVE = "d" * 32


@task
def fit(epochs):
    i = iterflow.context.loop_index
    iterflow.log_metric("loss", 1.0 / (i + 1) + (3.0 if i == 1_500 else 0.0))
    iterflow.log_metric("accuracy", i / epochs)
    iterflow.log_metric("lr", 0.1 if i < 2_000 else 0.01)
    if i < epochs - 1:
        raise LOOP(result=i)
    return i


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(base url, store, run id)`` of a uvicorn server in a thread."""

    from iterflow.ui import create_app

    home = tmp_path_factory.mktemp("browser-metrics")
    store = open_store(f"sqlite:///{home}/iterflow.db", home=home)
    with Flow("fitting") as flow:
        fit(5_000)
    state = flow.run(store=store)
    assert state.is_successful()
    with serving(create_app(store, interval=0.2)) as base:
        yield base, store, state.run_id
    store.close()


def titles(page) -> list[str]:  # noqa: F811
    return page.locator("#loop-fit div.chart .u-title").all_inner_texts()


def test_one_labelled_chart_per_metric_and_a_metric_column(served, page, tmp_path):  # noqa: F811
    base, _store, run_id = served
    page.goto(f"{base}/runs/{run_id}")
    charts = page.locator("#loop-fit div.chart")
    wait_until(lambda: charts.count() == 3)
    assert [charts.nth(i).get_attribute("data-series") for i in range(3)] == [
        "loss", "accuracy", "lr"]
    assert page.locator("#loop-fit div.chart canvas").count() == 3
    names = [t.split(" \u00b7 ")[0] for t in titles(page)]
    assert names == ["loss", "accuracy", "lr"]
    assert all("5000 iterations" in t for t in titles(page))
    assert "2000 points shown" in titles(page)[0]  # downsampled on the server
    assert "last 0.01" in titles(page)[2]
    # The iteration table: a column per metric, each iteration's value.
    heads = page.locator("#loop-fit table.iterations th.metric").all_inner_texts()
    assert heads == ["loss", "accuracy", "lr"]
    second = page.locator("#loop-fit table.iterations tbody tr").nth(1)
    assert second.locator('td[data-metric="loss"]').inner_text() == "0.5"
    assert second.locator('td[data-metric="accuracy"]').inner_text() == "0.0002"
    shoot(page, "metrics", tmp_path, full_page=True)
    assert page.errors == []


def test_dragging_across_a_chart_asks_for_that_range(served, page):  # noqa: F811
    base, _store, run_id = served
    page.goto(f"{base}/runs/{run_id}")
    charts = page.locator("#loop-fit div.chart")
    wait_until(lambda: charts.count() == 3)
    over = charts.first.locator(".u-over")
    over.scroll_into_view_if_needed()  # the mouse only reaches what is on screen
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    with page.expect_response(re.compile(r"/series/fit\?start=\d+&end=\d+")) as answer:
        page.mouse.move(box["x"] + box["width"] * 0.25, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=5)
        page.mouse.up()
    zoomed = answer.value.json()
    lo, hi = zoomed["start"], zoomed["end"]
    assert 800 < lo < hi < 2_200 and hi - lo < 1_000
    assert zoomed["series"]["loss"]["x"] == list(range(lo, hi + 1))  # every iteration
    bar = page.locator("#loop-fit .charts-bar")
    wait_until(lambda: f"iterations {lo}" in bar.inner_text())
    wait_until(lambda: "2000 points shown" not in titles(page)[0])
    page.locator("#loop-fit .charts-bar button", has_text="Whole loop").click()
    wait_until(lambda: "2000 points shown" in titles(page)[0])
    assert page.errors == []


def test_a_live_runs_charts_grow(served, page, tmp_path):  # noqa: F811
    base, store, _run_id = served
    sink = store.sink(heartbeat_interval=0.5)
    tid = f"{LIVE}/fit"
    sink.handle(FlowRunEvent(LIVE, "fitting", Running(), tasks=(("fit", "fit"),),
                             parameters={"epochs": 300}))
    sink.handle(TaskRunEvent(LIVE, tid, "fit", "fit", None, 0, Running()))

    def iteration(i: int) -> None:
        for name, value in (("loss", 1.0 / (i + 1)), ("accuracy", i / 300)):
            sink.handle(MetricEvent(LIVE, tid, "fit", "fit", None, i, None, name, value,
                                    time.time()))
        sink.handle(TaskRunEvent(LIVE, tid, "fit", "fit", None, i,
                                 Looped(result=i, loop_index=i)))

    for i in range(3):
        iteration(i)
    sink.flush()
    done = threading.Event()

    def keep_fitting() -> None:
        i = 3
        while not done.is_set() and i < 300:
            time.sleep(0.02)
            iteration(i)
            i += 1
        sink.handle(TaskRunEvent(LIVE, tid, "fit", "fit", None, i,
                                 Success(result=i, loop_count=i + 1)))
        sink.handle(FlowRunEvent(LIVE, "fitting", Success()))
        sink.close()

    def iterations_charted() -> int:
        found = titles(page)
        if len(found) != 2:
            return -1
        return int(re.search(r"(\d+) iterations", found[0]).group(1))

    writer = threading.Thread(target=keep_fitting)
    try:
        page.goto(f"{base}/runs/{LIVE}")
        wait_until(lambda: iterations_charted() >= 3)
        first = iterations_charted()
        writer.start()
        wait_until(lambda: iterations_charted() > first + 20, timeout=30)
        shoot(page, "metrics-live", tmp_path, full_page=True)
        done.set()
        writer.join()
        wait_until(lambda: page.locator("#run-header .state").inner_text() == "Success")
        final = page.locator("#loop-fit .summary .big").inner_text()
        wait_until(lambda: iterations_charted() == int(final.replace(",", "")) - 1, timeout=30)
    finally:
        done.set()
        if writer.is_alive():
            writer.join()
    assert page.errors == []
