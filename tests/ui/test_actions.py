"""The run actions over HTTP: Cancel, Resume, Delete — and every way they are refused."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import TestClient

import iterflow.store
from iterflow.core.state import Running
from iterflow.events import FlowRunEvent
from iterflow.store import get_run, open_store
from iterflow.ui import create_app

ORIGIN = {"origin": "http://testserver"}

FLAKY = '''
from pathlib import Path
from iterflow import Flow, task

MARK = Path(__file__).with_name("fixed")

@task
def first():
    return 1

@task
def second(x):
    if not MARK.exists():
        raise RuntimeError("not fixed yet")
    return x + 1

with Flow("flaky") as flow:
    second(first())
'''


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as st:
        yield st


def failed_run(tmp_path, store) -> str:
    """A run of a flow file that failed; it succeeds once the file ``fixed`` exists."""
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY)
    namespace: dict = {"__file__": str(path)}
    exec(compile(FLAKY, str(path), "exec"), namespace)
    state = namespace["flow"].run(store=store, source=f"{path}:flow")
    assert state.is_failed()
    return state.run_id


def live_run(store) -> str:
    run_id = "d" * 32
    sink = store.sink()
    sink.handle(FlowRunEvent(run_id, "looping", Running(), tasks=(("grind", "grind"),)))
    sink.flush()
    return run_id


def token(client: TestClient, run_id: str) -> str:
    page = client.get(f"/runs/{run_id}").text
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_actions_refuse_get_a_missing_token_and_a_foreign_origin(tmp_path, store):
    run_id = failed_run(tmp_path, store)
    with TestClient(create_app(store)) as client:
        for action in ("cancel", "resume", "delete"):
            assert client.get(f"/runs/{run_id}/{action}").status_code in (200, 405)
        assert client.get(f"/runs/{run_id}/cancel").status_code == 405
        assert client.get(f"/runs/{run_id}/resume").status_code == 405
        csrf = token(client, run_id)
        # No token in the form.
        r = client.post(f"/runs/{run_id}/delete", data={}, headers=ORIGIN)
        assert r.status_code == 403 and "security token" in r.text
        # A wrong token.
        r = client.post(f"/runs/{run_id}/delete", data={"csrf": "x" * 43}, headers=ORIGIN)
        assert r.status_code == 403
        # Another site's form, with the right token even.
        r = client.post(f"/runs/{run_id}/delete", data={"csrf": csrf},
                        headers={"origin": "http://evil.example"})
        assert r.status_code == 403 and "Origin" in r.text
        # No Origin and no Referer.
        assert client.post(f"/runs/{run_id}/delete", data={"csrf": csrf}).status_code == 403
    # A browser without the cookie: the form's token alone is not enough.
    with TestClient(create_app(store)) as other:
        r = other.post(f"/runs/{run_id}/delete", data={"csrf": csrf}, headers=ORIGIN)
        assert r.status_code == 403
    assert get_run(run_id, store=store).state == "Failed"


def test_delete_asks_first_then_deletes(tmp_path, store):
    run_id = failed_run(tmp_path, store)
    with TestClient(create_app(store)) as client:
        csrf = token(client, run_id)
        confirm = client.get(f"/runs/{run_id}/delete")
        assert confirm.status_code == 200 and "Delete run" in confirm.text
        assert get_run(run_id, store=store)  # asking deleted nothing
        r = client.post(f"/runs/{run_id}/delete", data={"csrf": csrf}, headers=ORIGIN,
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/?deleted={run_id}"
        assert f"Deleted run {run_id}." in client.get(r.headers["location"]).text
    with pytest.raises(iterflow.errors.StoreError):
        get_run(run_id, store=store)


def test_resume_starts_a_detached_process_that_finishes_the_run(tmp_path, store):
    run_id = failed_run(tmp_path, store)
    (tmp_path / "fixed").write_text("yes")
    with TestClient(create_app(store)) as client:
        csrf = token(client, run_id)
        r = client.post(f"/runs/{run_id}/resume", data={"csrf": csrf}, headers=ORIGIN,
                        follow_redirects=False)
        assert r.status_code == 303 and "done=resume-started" in r.headers["location"]
        page = client.get(r.headers["location"]).text
        assert f"iterflow resume {run_id} started" in page
    deadline = time.monotonic() + 90
    while get_run(run_id, store=store).state != "Success":
        assert time.monotonic() < deadline, get_run(run_id, store=store)
        time.sleep(0.3)


def test_resume_without_a_source_gives_the_command(store, tmp_path):
    from iterflow import Flow, task

    @task
    def boom():
        raise ValueError("no")

    with Flow("sourceless") as flow:
        boom()
    run_id = flow.run(store=store).run_id
    with TestClient(create_app(store)) as client:
        csrf = token(client, run_id)
        r = client.post(f"/runs/{run_id}/resume", data={"csrf": csrf}, headers=ORIGIN)
        assert f"type: iterflow resume {run_id}" in r.text


def test_cancel_a_live_run(store):
    run_id = live_run(store)
    with TestClient(create_app(store)) as client:
        csrf = token(client, run_id)
        r = client.post(f"/runs/{run_id}/cancel", data={"csrf": csrf}, headers=ORIGIN)
        assert r.status_code == 200
        if hasattr(iterflow.store, "request_cancel"):
            assert "Cancel requested" in r.text
        else:
            assert f"type: iterflow cancel {run_id}" in r.text


def test_read_only_dashboards_change_nothing(tmp_path, store):
    run_id = failed_run(tmp_path, store)
    with TestClient(create_app(store, read_only=True)) as client:
        page = client.get(f"/runs/{run_id}").text
        assert "read-only: actions are off" in page
        assert re.search(r'value="resume" disabled', page)
        r = client.post(f"/runs/{run_id}/delete", data={"csrf": "x"}, headers=ORIGIN)
        assert r.status_code == 403
    # A store this process cannot write: the same, whatever the flag says.
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path,
                    read_only=True) as reading, TestClient(create_app(reading)) as client:
        page = client.get(f"/runs/{run_id}").text
        assert "read-only: actions are off" in page
        csrf = token(client, run_id)
        r = client.post(f"/runs/{run_id}/delete", data={"csrf": csrf}, headers=ORIGIN)
        assert r.status_code == 403
    assert get_run(run_id, store=store).state == "Failed"


