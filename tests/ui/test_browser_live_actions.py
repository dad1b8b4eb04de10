"""The dashboard's actions on a real run, in a real browser.

A looping flow runs in its own process (``tests/cancel/looper.py``); the
dashboard (uvicorn in a thread) cancels it — the page shows ``Cancelled``
without a reload, through its live updates — resumes it until it finishes,
and deletes it. Another run is rewound from its iteration page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from iterflow.errors import StoreError
from iterflow.store import get_run, iterations, open_store
from tests.ui.serving import serving
from tests.ui.test_browser import browser, page, wait_until  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOOPER = Path(__file__).parents[1] / "cancel" / "looper.py"
HEARTBEAT = "0.5"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base url, store, home)`` of a uvicorn server in a thread, on a store of its own."""

    from iterflow.ui import create_app

    home = tmp_path_factory.mktemp("live-actions")
    store = open_store(f"sqlite:///{home}/iterflow.db", home=home)
    with serving(create_app(store, interval=0.2)) as base:
        yield base, store, home
    store.close()


@pytest.fixture
def looper_env(server, monkeypatch):
    """The environment of the looper, and of what the dashboard starts (it inherits ours)."""
    _base, store, home = server
    values = {"ITERFLOW_STORE_URL": store.url, "ITERFLOW_HOME": str(home),
              "ITERFLOW_HEARTBEAT": HEARTBEAT, "LOOPER_ITERATIONS": "40",
              "LOOPER_PAUSE": "0.1", "NO_COLOR": "1"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def start_looper(env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    run_id = f"live-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([sys.executable, str(LOOPER), run_id, "local"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run_id, proc


def count(store, run_id: str) -> int:
    try:
        return len(iterations(run_id, "count", store=store))
    except StoreError:
        return 0


def test_cancel_resume_and_delete_a_real_looping_run(server, page, looper_env):  # noqa: F811
    base, store, _home = server
    # Slow iterations until the cancel: 20 s for the page, the click and a heartbeat
    # (40 of 0.1 s left under 4 s, and on a loaded machine the run could end first).
    # The resume the dashboard starts inherits this process's environment: 0.1 s.
    run_id, proc = start_looper(dict(looper_env, LOOPER_PAUSE="0.5"))
    try:
        wait_until(lambda: count(store, run_id) >= 3, timeout=60)
        page.goto(f"{base}/runs/{run_id}")
        state = page.locator("#run-header .state")
        assert state.inner_text() == "Running"
        assert page.locator("button[value=resume]").is_disabled()
        page.click("button[value=cancel]")
        page.wait_for_url("**/runs/*?done=cancel-requested*")
        assert "Cancel requested" in page.locator(".notice").inner_text()
        # No reload from here: the page follows the run and shows it stop.
        wait_until(lambda: state.inner_text() == "Cancelled", timeout=30)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped_at = count(store, run_id)
    assert stopped_at < 40
    assert get_run(run_id, store=store).state == "Cancelled"

    # The buttons follow the state live too: Resume is on, Cancel off.
    wait_until(lambda: page.locator("button[value=resume]").is_enabled(), timeout=10)
    assert page.locator("button[value=cancel]").is_disabled()
    page.click("button[value=resume]")
    page.wait_for_url("**/runs/*?done=resume-started*")
    assert "Resuming" in page.locator(".notice").inner_text()

    # No reload either: the page that started the resume follows the run it starts.
    state = page.locator("#run-header .state")
    wait_until(lambda: state.inner_text() == "Running", timeout=60)
    wait_until(lambda: state.inner_text() == "Success", timeout=120)
    indexes = [it.loop_index for it in iterations(run_id, "count", store=store)]
    assert indexes[-1] == 39 and len(set(indexes)) == 40  # continued, each iteration once

    page.click("text=Delete…")
    page.wait_for_url(f"**/runs/{run_id}/delete")
    page.click("text=Delete this run")
    page.wait_for_url("**/?deleted=*")
    assert page.locator(".notice").inner_text() == f"Deleted run {run_id}."
    with pytest.raises(StoreError):
        get_run(run_id, store=store)
    assert page.errors == []


def test_rewind_a_finished_loop_from_its_iteration_page(server, page, looper_env):  # noqa: F811
    base, store, _home = server
    looper_env = dict(looper_env, LOOPER_ITERATIONS="6", LOOPER_PAUSE="0")
    run_id, proc = start_looper(looper_env)
    assert proc.wait(timeout=120) == 0
    assert get_run(run_id, store=store).state == "Success"
    page.goto(f"{base}/runs/{run_id}/iterations/3/count")
    button = page.locator("button[value=rewind]")
    assert button.is_enabled()
    started = time.time()
    button.click()
    page.wait_for_url("**/runs/*?done=rewind-started*")
    notice = page.locator(".notice").inner_text()
    assert f"iterflow resume {run_id} --from-iteration 3 --task count" in notice

    def rewound() -> bool:
        run = get_run(run_id, store=store)
        return run.state == "Success" and (run.ended or 0) > started

    # The page follows the rerun live: it goes Running, then Success again.
    state = page.locator("#run-header .state")
    wait_until(lambda: state.inner_text() == "Running", timeout=60)
    wait_until(rewound, timeout=120)
    wait_until(lambda: state.inner_text() == "Success", timeout=30)
    from iterflow.store.rewind import superseded_before

    assert [(slug, k) for slug, k, _ in superseded_before(store, run_id)] == [("count", 3)]
    page.reload()
    assert page.locator("#run-header .state").inner_text() == "Success"
    assert page.errors == []
