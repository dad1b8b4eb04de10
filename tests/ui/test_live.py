"""Live updates: a running flow's page streams its new iterations, and the stream ends."""

from __future__ import annotations

import re
import threading
import time

from starlette.testclient import TestClient

from iterflow.core.state import Looped, Running, Success
from iterflow.events import FlowRunEvent, TaskRunEvent
from iterflow.store import change_marker
from iterflow.ui import create_app
from iterflow.ui.live import Hub

RUN = "a" * 32
TID = f"{RUN}/grind"


def start_run(store):
    sink = store.sink(heartbeat_interval=0.2)
    sink.handle(FlowRunEvent(RUN, "live", Running(), tasks=(("grind", "grind"),),
                             parameters={"n": 40}))
    sink.handle(TaskRunEvent(RUN, TID, "grind", "grind", None, 0, Running()))
    for i in range(5):
        sink.handle(TaskRunEvent(RUN, TID, "grind", "grind", None, i,
                                 Looped(result=i, loop_index=i)))
    sink.flush()
    return sink


def events(lines):
    """``(name, data)`` pairs from SSE lines."""
    name, data = None, []
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and name is not None:
            yield name, "\n".join(data)
            name, data = None, []


def test_a_running_flow_streams_its_iterations_and_the_stream_ends(empty_store):
    sink = start_run(empty_store)

    def keep_looping():
        for i in range(5, 40):
            time.sleep(0.02)
            sink.handle(TaskRunEvent(RUN, TID, "grind", "grind", None, i,
                                     Looped(result=i, loop_index=i)))
        sink.handle(TaskRunEvent(RUN, TID, "grind", "grind", None, 40,
                                 Success(result=40, loop_count=41)))
        sink.handle(FlowRunEvent(RUN, "live", Success()))
        sink.close()

    counts, names, repeats = [], [], 0
    last: dict[str, str] = {}
    with TestClient(create_app(empty_store, interval=0.05)) as c:
        page = c.get(f"/runs/{RUN}")
        assert f'sse-connect="/runs/{RUN}/events"' in page.text
        assert 'sse-close="end"' in page.text
        writer = threading.Thread(target=keep_looping)
        with c.stream("GET", f"/runs/{RUN}/events") as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            for name, data in events(answer.iter_lines()):
                names.append(name)
                repeats += last.get(name) == data
                last[name] = data
                if name == "panel-grind":
                    counts.append(int(re.search(r'class="big">([\d,]+)<', data)
                                      .group(1).replace(",", "")))
                    if not writer.is_alive() and writer.ident is None:
                        writer.start()
        writer.join()
    assert names[-1] == "end"
    assert counts[0] == 5 and counts[-1] == 41
    assert len(counts) >= 3, counts  # it rose while we watched
    assert counts == sorted(counts)
    # Only what changed is sent: never the same fragment twice in a row.
    assert repeats == 0


def test_a_finished_run_page_has_no_stream(client, big):
    _store, run = big
    assert "sse-connect" not in client.get(f"/runs/{run.run_id}").text


def test_runs_list_streams_its_rows(empty_store):
    sink = start_run(empty_store)
    try:
        with TestClient(create_app(empty_store, interval=0.05)) as c:
            assert 'sse-connect="/events"' in c.get("/").text
            with c.stream("GET", "/events") as answer:
                name, data = next(events(answer.iter_lines()))
            assert name == "rows" and RUN in data and "Running" in data
    finally:
        sink.close()


def test_the_hub_polls_once_for_every_viewer(empty_store):
    hub = Hub(empty_store, interval=0.02)
    before = change_marker(empty_store)
    hub.start()
    try:
        version = hub.version
        sink = start_run(empty_store)
        sink.close()
        deadline = time.time() + 5
        while hub.version == version and time.time() < deadline:
            time.sleep(0.01)
        assert hub.version > version
        assert change_marker(empty_store) != before
    finally:
        hub.stop()


def test_logs_are_followed_live(empty_store):
    from iterflow.events import LogEvent

    sink = start_run(empty_store)
    sink.handle(LogEvent(RUN, TID, "grind", None, 1, 20, "line 0", time.time()))
    sink.flush()

    def write_more():
        for i in range(1, 6):
            time.sleep(0.05)
            sink.handle(LogEvent(RUN, TID, "grind", None, i, 20 if i % 2 else 40,
                                 f"line {i}", time.time()))
        sink.handle(FlowRunEvent(RUN, "live", Success()))
        sink.close()

    with TestClient(create_app(empty_store, interval=0.05)) as c:
        page = c.get(f"/runs/{RUN}/logs?level=40")
        follow = re.search(r'sse-connect="([^"]+)"', page.text).group(1).replace("&amp;", "&")
        assert "level=40" in follow and "after=" in follow
        writer = threading.Thread(target=write_more)
        writer.start()
        received = []
        with c.stream("GET", follow) as answer:
            for name, data in events(answer.iter_lines()):
                received.append((name, data))
        writer.join()
    lines = "".join(data for name, data in received if name == "lines")
    assert "line 2" in lines and "line 4" in lines
    assert "line 1" not in lines and "line 0" not in lines  # the filter holds
    assert lines.count("line 2") == 1  # each line once
    assert received[-1][0] == "end"
