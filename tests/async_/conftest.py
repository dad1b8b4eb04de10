"""Async tasks get the engine suites' minute per test: a broken driver fails, not stalls."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture
def pages_server():
    """A real local HTTP API: ``GET /items?page=N`` gives items and a ``Link: rel="next"``.

    Yields its base URL; ``server.hits`` counts the requests it answered.
    """
    import http.server
    import json
    import threading
    from urllib.parse import parse_qs, urlparse

    pages = 4

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connections

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            page = int(query.get("page", ["0"])[0])
            body = json.dumps([page * 10 + i for i in range(3)]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if page + 1 < pages:
                self.send_header("Link", f'</items?page={page + 1}>; rel="next"')
            self.end_headers()
            self.wfile.write(body)
            server.hits += 1

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.hits = 0
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
