"""``request_cancel`` in the store, on SQLite and PostgreSQL: what it writes, who reads it."""

from __future__ import annotations

import time

import pytest

from iterflow.core.state import Running
from iterflow.errors import StoreError
from iterflow.events import FlowRunEvent
from iterflow.store import request_cancel
from iterflow.store.cancel_watch import asked, cancel_asked, watch
from iterflow.store.runstore import heartbeat_interval


def test_a_live_run_gets_a_request_only_its_owner_reads(store, sink):
    run_id = "c" * 32
    sink.handle(FlowRunEvent(run_id, "looping", Running(), tasks=(("grind", "grind"),)))
    sink.flush()
    assert request_cancel(run_id[:6], store=store) == "requested"
    assert request_cancel(run_id, store=store) == "requested"  # asking twice is fine
    read = store.read(lambda conn: (cancel_asked(conn, [run_id, "other"], sink.owner),
                                    cancel_asked(conn, [run_id], "a-resume-s-token")))
    assert read == ([run_id], [])


def test_the_heartbeat_stops_the_watched_run(store, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HEARTBEAT", "0.05")
    sink = store.sink()
    try:
        run_id = "e" * 32
        stopped: list[str] = []
        with watch(run_id, stopped.append):
            sink.handle(FlowRunEvent(run_id, "looping", Running(), tasks=(("g", "g"),)))
            sink.flush()
            request_cancel(run_id, store=store)
            deadline = time.monotonic() + 30
            while not stopped and time.monotonic() < deadline:
                time.sleep(0.02)
        assert stopped and stopped[0] == "cancelled by iterflow cancel"
        asked([run_id])  # no longer watched: nothing happens
        assert len(set(stopped)) == 1
    finally:
        sink.close()


def test_heartbeat_setting(monkeypatch):
    monkeypatch.delenv("ITERFLOW_HEARTBEAT", raising=False)
    assert heartbeat_interval() == 5.0
    monkeypatch.setenv("ITERFLOW_HEARTBEAT", "0.5")
    assert heartbeat_interval() == 0.5
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv("ITERFLOW_HEARTBEAT", bad)
        with pytest.raises(StoreError, match="ITERFLOW_HEARTBEAT"):
            heartbeat_interval()
