"""The dashboard is a server: the token, its headers, escaping, and never unpickling."""

from __future__ import annotations

import html
import pathlib
import re

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from iterflow.core.state import Failed, Looped, Running, Success
from iterflow.events import FlowRunEvent, LogEvent, TaskRunEvent
from iterflow.ui import create_app

TOKEN = "s3cret-token"


def every_page(run_id: str, task: str = "grind") -> list[str]:
    return [
        "/", f"/runs/{run_id}", f"/runs/{run_id}/graph.svg", f"/runs/{run_id}/logs",
        f"/runs/{run_id}/tasks/{task}", f"/runs/{run_id}/iterations/{task}",
        f"/runs/{run_id}/iterations/0/{task}", f"/runs/{run_id}/strip/{task}",
        "/static/style.css", "/static/vendor/htmx.min.js", "/events", f"/runs/{run_id}/events",
    ]


# -- the token ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(big):
    store, run = big
    with TestClient(create_app(store, token=TOKEN)) as c:
        yield c, run


def test_without_the_token_every_route_answers_401(guarded):
    c, run = guarded
    for path in [*every_page(run.run_id), "/nothing/here", "/runs/nope"]:
        answer = c.get(path)
        assert answer.status_code == 401, path
        assert run.run_id not in answer.text
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/?token=wrong").status_code == 401
    assert c.get("/", headers={"Cookie": "iterflow_token=wrong"}).status_code == 401


def test_the_token_as_bearer_query_or_cookie(guarded):
    c, run = guarded
    ok = c.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and run.run_id in ok.text
    assert "set-cookie" not in ok.headers
    # ?token= sets a cookie, so links and assets work from then on.
    first = c.get(f"/runs/{run.run_id}?token={TOKEN}")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"iterflow_token={TOKEN}")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The client keeps the cookie, as a browser does.
    for path in every_page(run.run_id):
        if path.endswith("events"):
            continue
        assert c.get(path).status_code == 200, path
    c.cookies.clear()
    assert c.get("/").status_code == 401


def test_sse_needs_the_token_too(guarded):
    c, run = guarded
    with c.stream("GET", f"/runs/{run.run_id}/events",
                  headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    assert "event: end" in text  # the run has finished: the stream ends


def test_read_only_refuses_anything_but_reading(big):
    store, _run = big
    with TestClient(create_app(store, read_only=True)) as c:
        assert c.post("/").status_code == 403
        assert c.get("/").status_code == 200


# -- headers ----------------------------------------------------------------------------------


def test_security_headers_on_everything(client, big):
    _store, run = big
    for path in [*every_page(run.run_id)[:-2], "/runs/nope"]:
        answer = client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, path
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    guarded = TestClient(create_app(big[0], token=TOKEN))
    refused = guarded.get("/")
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]


def test_pages_have_no_inline_scripts_or_styles(client, big):
    _store, run = big
    for path in every_page(run.run_id)[:8]:
        text = client.get(path).text
        assert "style=" not in text, path
        for script in re.findall(r"<script[^>]*>", text):
            assert 'src="/static/' in script, path
        assert not re.search(r"<script[^>]*>[^<]+</script>", text), path
        assert " on" + "click=" not in text and "javascript:" not in text


# -- escaping ---------------------------------------------------------------------------------

EVIL = "<script>alert(1)</script>\"'{{7*7}}"


def test_every_user_string_is_escaped(empty_store):
    run_id = "e" * 32
    task = f"t{EVIL}"
    sink = empty_store.sink()
    sink.handle(FlowRunEvent(run_id, f"flow{EVIL}", Running(), tasks=((task, task),),
                             parameters={f"key{EVIL}": f"value{EVIL}"},
                             source=f"file{EVIL}.py"))
    tid = f"{run_id}/{task}"
    sink.handle(TaskRunEvent(run_id, tid, task, task, None, 0, Running()))
    sink.handle(TaskRunEvent(run_id, tid, task, task, None, 0, Looped(result=EVIL,
                                                                       loop_index=0)))
    sink.handle(LogEvent(run_id, tid, task, None, 1, 40, f"log{EVIL}", 1.0))
    sink.handle(TaskRunEvent(run_id, tid, task, task, None, 1, Failed(
        f"message{EVIL}", traceback=f"Traceback{EVIL}", loop_count=2)))
    sink.handle(FlowRunEvent(run_id, f"flow{EVIL}", Failed(f"run{EVIL}")))
    sink.close()
    from urllib.parse import quote

    with TestClient(create_app(empty_store)) as c:
        pages = ["/", f"/runs/{run_id}", f"/runs/{run_id}/logs",
                 f"/runs/{run_id}/tasks/{quote(task)}",
                 f"/runs/{run_id}/iterations/{quote(task)}",
                 f"/runs/{run_id}/iterations/0/{quote(task)}",
                 f"/runs/{run_id}/iterations/1/{quote(task)}",
                 f"/runs/{run_id}/graph.svg", f"/?q={quote(EVIL)}"]
        for path in pages:
            answer = c.get(path)
            assert answer.status_code == 200, path
            text = answer.text
            assert "<script>alert" not in text, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
            # Quotes escaped too, and the braces left as they are (never evaluated).
            assert str(escape(EVIL)) in text or html.escape(EVIL) in text, path
        run_page = c.get(f"/runs/{run_id}").text
        for shown in ("flow", "key", "value", "message", "run", "file"):
            assert f"{shown}&lt;script&gt;" in run_page, shown
        assert "Traceback&lt;script&gt;" in c.get(f"/runs/{run_id}/iterations/1/{quote(task)}").text
        assert "log&lt;script&gt;" in c.get(f"/runs/{run_id}/logs").text


# -- never unpickle -----------------------------------------------------------------------------


class Trap:
    """A value whose pickle, once loaded, creates a file: proof that it was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))

    def __repr__(self) -> str:
        return "Trap()"


def test_nothing_is_unpickled(empty_store, tmp_path):
    marker = tmp_path / "unpickled"
    run_id = "f" * 32
    sink = empty_store.sink()
    sink.handle(FlowRunEvent(run_id, "trap", Running(), tasks=(("grind", "grind"),),
                             parameters={"x": 1}))
    tid = f"{run_id}/grind"
    sink.handle(TaskRunEvent(run_id, tid, "grind", "grind", None, 0, Running()))
    for i in range(3):
        sink.handle(TaskRunEvent(run_id, tid, "grind", "grind", None, i,
                                 Looped(result=Trap(str(marker)), loop_index=i)))
    sink.handle(TaskRunEvent(run_id, tid, "grind", "grind", None, 3,
                             Success(result=Trap(str(marker)), loop_count=4)))
    sink.handle(FlowRunEvent(run_id, "trap", Success()))
    sink.close()
    # The trap works: loading what was stored would create the file.
    from iterflow.store import iterations, load_result

    record = iterations(run_id, "grind", store=empty_store)[0]
    load_result(record.result_id, store=empty_store)
    assert marker.exists()
    marker.unlink()
    with TestClient(create_app(empty_store)) as c:
        for path in every_page(run_id):
            if path.endswith("events"):
                continue
            assert c.get(path).status_code == 200, path
        assert "Trap()" in c.get(f"/runs/{run_id}/iterations/grind").text  # the preview
        with c.stream("GET", f"/runs/{run_id}/events") as answer:
            "".join(answer.iter_text())
    assert not marker.exists()


def test_only_the_allowed_host_names_are_answered(big):
    store, _run = big
    app = create_app(store, allowed_hosts=frozenset({"localhost", "127.0.0.1"}))
    with TestClient(app, base_url="http://localhost:4200") as c:
        assert c.get("/").status_code == 200
    with TestClient(app, base_url="http://rebound.example") as c:
        refused = c.get("/")
        assert refused.status_code == 421
        assert refused.headers["x-content-type-options"] == "nosniff"
