"""The iteration page's "rewind to here" over HTTP: offered, refused, or the command shown."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from iterflow import LOOP, Flow, task
from iterflow.store import get_run, open_store
from iterflow.ui import create_app

ORIGIN = {"origin": "http://testserver"}


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as st:
        yield st


@task
def climb():
    import iterflow

    i = iterflow.context.loop_index
    if i < 4:
        raise LOOP(result=i)
    return i


@task
def once():
    return 1


def looping_run(store) -> str:
    with Flow("climbing") as flow:
        climb()
        once()
    return flow.run(store=store).run_id


def token(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_rewind_without_a_source_gives_the_command(store):
    run_id = looping_run(store)
    with TestClient(create_app(store)) as client:
        page = client.get(f"/runs/{run_id}/iterations/2/climb").text
        assert "Rewind to here" in page
        assert not re.search(r'value="rewind"[^>]*disabled', page)
        r = client.post(f"/runs/{run_id}/rewind/2/climb", data={"csrf": token(page)},
                        headers=ORIGIN)
        assert r.status_code == 200
        assert (f"type: iterflow resume {run_id} --from-iteration 2 --task climb"
                in r.text)
        # A task that does not loop has no such button, and no such action.
        assert "Rewind to here" not in client.get(f"/runs/{run_id}/tasks/once").text
        r = client.post(f"/runs/{run_id}/rewind/0/once", data={"csrf": token(page)},
                        headers=ORIGIN)
        assert r.status_code == 404
    assert get_run(run_id, store=store).state == "Success"


def test_rewind_is_csrf_protected_and_off_when_read_only(store):
    run_id = looping_run(store)
    with TestClient(create_app(store)) as client:
        client.get(f"/runs/{run_id}/iterations/1/climb")
        r = client.post(f"/runs/{run_id}/rewind/1/climb", data={"csrf": "x" * 43},
                        headers=ORIGIN)
        assert r.status_code == 403
        assert client.get(f"/runs/{run_id}/rewind/1/climb").status_code == 405
    with TestClient(create_app(store, read_only=True)) as client:
        page = client.get(f"/runs/{run_id}/iterations/1/climb").text
        assert re.search(r'value="rewind"[^>]*disabled', page)
        assert "read-only: actions are off" in page
        r = client.post(f"/runs/{run_id}/rewind/1/climb", data={"csrf": token(page)},
                        headers=ORIGIN)
        assert r.status_code == 403
