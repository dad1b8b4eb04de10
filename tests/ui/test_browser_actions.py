"""The run actions in a real browser: delete a run, resume a failed one, cancel a live one.

The same Chromium and uvicorn set-up as ``test_browser.py``, on a store of
its own, so these runs change nothing the other browser tests look at.
"""

from __future__ import annotations

import pytest

import iterflow.store
from iterflow.errors import StoreError
from iterflow.store import get_run, open_store
from tests.ui.serving import serving
from tests.ui.test_actions import failed_run, live_run
from tests.ui.test_browser import browser, page, wait_until  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base url, store, home)`` of a uvicorn server in a thread."""

    from iterflow.ui import create_app

    home = tmp_path_factory.mktemp("actions-store")
    store = open_store(f"sqlite:///{home}/iterflow.db", home=home)
    with serving(create_app(store, interval=0.2)) as base:
        yield base, store, home
    store.close()


def test_delete_a_run(server, page):  # noqa: F811 - the imported fixture
    base, store, home = server
    run_id = failed_run(home, store)
    page.goto(f"{base}/runs/{run_id}")
    page.click("text=Delete…")
    page.wait_for_url(f"**/runs/{run_id}/delete")
    page.click("text=Delete this run")
    page.wait_for_url("**/?deleted=*")
    assert page.locator(".notice").inner_text() == f"Deleted run {run_id}."
    with pytest.raises(StoreError):
        get_run(run_id, store=store)
    assert page.errors == []


def test_resume_a_failed_run(server, page):  # noqa: F811 - the imported fixture
    base, store, home = server
    run_id = failed_run(home, store)
    (home / "fixed").write_text("yes")
    page.goto(f"{base}/runs/{run_id}")
    assert page.locator("#run-header .state").inner_text() == "Failed"
    page.click("button[value=resume]")
    page.wait_for_url("**/runs/*?done=resume-started*")
    assert "Resuming" in page.locator(".notice").inner_text()

    # The page follows the run the resume starts, with no reload.
    wait_until(lambda: page.locator("#run-header .state").inner_text() == "Success",
               timeout=90)
    assert page.locator("button[value=resume]").is_disabled()
    assert page.errors == []


def test_cancel_a_live_run(server, page):  # noqa: F811 - the imported fixture
    base, store, _home = server
    run_id = live_run(store)
    page.goto(f"{base}/runs/{run_id}")
    assert page.locator("button[value=resume]").is_disabled()
    page.click("button[value=cancel]")
    page.wait_for_url("**/runs/*?done=cancel-*")
    notice = page.locator(".notice").inner_text()
    if hasattr(iterflow.store, "request_cancel"):
        assert "Cancel requested" in notice
    else:
        assert f"iterflow cancel {run_id}" in notice
    assert page.errors == []


def test_a_loop_chart_draws_and_zooms(server, page, tmp_path):  # noqa: F811 - the fixture
    from tests.ui.test_browser import shoot
    from tests.ui.test_charts import train

    base, store, _home = server
    from iterflow import Flow

    with Flow("charted") as flow:
        train(3_000)
    run_id = flow.run(store=store).run_id
    page.goto(f"{base}/runs/{run_id}")
    chart = page.locator('#loop-train .chart[data-series="loss"]')
    chart.wait_for()
    assert chart.locator("canvas").count() == 1
    assert page.locator("#loop-train .chart").count() == 2  # loss and epoch
    shoot(page, "chart", tmp_path, full_page=True)
    chart.scroll_into_view_if_needed()
    box = chart.locator(".u-over").bounding_box()
    with page.expect_response(lambda r: "/series/train?start=" in r.url):
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 40, steps=5)
        page.mouse.up()
    page.locator("text=Whole loop").wait_for()
    assert "iterations" in page.locator("#loop-train .charts-bar").inner_text()
    assert page.errors == []
