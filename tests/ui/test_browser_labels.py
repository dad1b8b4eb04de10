"""Searching iterations by label in a real browser (Chromium driven by Playwright).

A real ``uvicorn`` server on a store written by a real flow run whose loop
labels each iteration; the search box on the iterations panel asks the
server, which filters in SQL and pages the result.
"""

from __future__ import annotations

import re

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import open_store
from tests.ui.serving import serving
from tests.ui.test_browser import browser, page, wait_until  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@task(task_run_name="crawl {site}")
def crawl(site, pages):
    i = iterflow.context.loop_index
    iterflow.set_iteration_label(f"cursor=c{i:03d}" + (" retry-later" if i % 50 == 0 else ""))
    if i < pages:
        raise LOOP(result=i)
    return i


@pytest.fixture(scope="module")
def server(tmp_path_factory):

    from iterflow.ui import create_app

    home = tmp_path_factory.mktemp("browser-labels")
    url = f"sqlite:///{home}/iterflow.db"
    with Flow("crawler") as flow:
        crawl("example.org", 400)
    state = flow.run(store=url)
    assert state.is_successful()
    store = open_store(url, home=home)
    with serving(create_app(store, interval=0.2)) as base:
        yield base, state.run_id
    store.close()


def _shown(page) -> list[int]:  # noqa: F811 - the fixture's name
    return [int(t) for t in page.locator("table.iterations tbody td.num a").all_inner_texts()]


def test_search_iterations_by_label(server, page):  # noqa: F811 - the fixture
    base, run_id = server
    page.goto(f"{base}/runs/{run_id}")
    # The run page names the task run after its input.
    assert page.locator("table.tasks").get_by_text("crawl example.org").count() >= 1
    panel = page.locator(".iter-table").first
    assert panel.locator("th", has_text="Label").count() == 1
    box = panel.locator("input[name=label]")
    box.fill("RETRY-LATER")
    box.press("Enter")  # htmx swaps the table in place
    wait_until(lambda: _shown(page) and _shown(page)[:2] == [0, 50])
    assert all("retry-later" in t for t in
               page.locator("table.iterations tbody td.label").all_inner_texts())
    # Page through the matches with the pager, which keeps the search.
    shown = set(_shown(page))
    while page.locator(".iter-table .pager a", has_text="later").count():
        page.locator(".iter-table .pager a", has_text="later").first.click()
        before = set(shown)
        wait_until(lambda before=before: not set(_shown(page)) <= before)
        shown |= set(_shown(page))
    assert sorted(shown) == list(range(0, 401, 50))
    # Another search replaces the rows; one that matches nothing says so.
    box = page.locator(".iter-table input[name=label]").first
    box.fill("c123")
    box.press("Enter")
    wait_until(lambda: _shown(page) == [123])
    box = page.locator(".iter-table input[name=label]").first
    box.fill("no such label")
    box.press("Enter")
    wait_until(lambda: page.locator(".iter-table td.empty").count() == 1)
    assert re.search("labelled “no such label”", page.locator(".iter-table td.empty").inner_text())
    assert page.errors == []
