"""Page a real HTTP API with async tasks: a Link-header cursor, then a bounded fan-out.

A tiny JSON API runs in this process (``serve()``): ``GET /sources/<name>``
returns one page of item ids and, while there are more, a
``Link: <...>; rel="next"`` header — the cursor, as GitHub's API gives it.
``GET /items/<id>`` returns one item.

The program opens one ``httpx.AsyncClient`` and runs the flow with
``await flow.run_async(...)``, which awaits the flow's async tasks on the
program's own event loop, so they all share the client and its pooled
connections:

- ``paginate`` (mapped over the sources) follows each source's ``next`` links
  with ``LOOP``, one page per iteration: each source pages on its own, a
  failed page is retried at the same cursor, and every page is recorded;
- ``fetch`` (mapped over every id found) gets the items, awaited side by
  side — ``max_concurrency=4`` lets at most four go at once, which the
  server checks.

Needs ``httpx``.

    python examples/pagination_async.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import httpx

import iterflow
from iterflow import LOOP, Flow, Parameter, flatten, task

PAGES = {"alpha": 3, "beta": 5, "gamma": 1}
PAGE_SIZE = 4
MAX_CONCURRENCY = 4


class API(http.server.ThreadingHTTPServer):
    """The JSON API; counts requests and the most items requests served at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client can reuse connections
    server: API

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        link = None
        if parts[0] == "sources" and len(parts) == 2 and parts[1] in PAGES:
            source, page = parts[1], int(parse_qs(url.query).get("page", ["0"])[0])
            body = [f"{source}-{page}-{i}" for i in range(PAGE_SIZE)]
            if page + 1 < PAGES[source]:
                link = f'</sources/{source}?page={page + 1}>; rel="next"'
        elif parts[0] == "items" and len(parts) == 2:
            body = self._item(parts[1])
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(data)

    def _item(self, item_id: str) -> dict:
        api = self.server
        with api.lock:
            api.requests += 1
            api.in_flight += 1
            api.most_in_flight = max(api.most_in_flight, api.in_flight)
        try:
            threading.Event().wait(0.02)  # a little latency, so requests overlap
            return {"id": item_id, "length": len(item_id)}
        finally:
            with api.lock:
                api.in_flight -= 1

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve() -> Iterator[API]:
    """Run the API on a free local port for the duration of the block."""
    api = API()
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.shutdown()
        api.server_close()
        thread.join()


@task(max_retries=3, retry_delay=0.1, max_loops=1_000, timeout=10)
async def paginate(source: str) -> list[str]:
    """Every item id of ``source``: one page per iteration, following ``rel="next"``."""
    client: httpx.AsyncClient = iterflow.context.client
    ids, url = iterflow.context.get("loop_result", ([], f"/sources/{source}"))
    response = await client.get(url)
    response.raise_for_status()  # an error is retried at this same cursor
    ids = ids + response.json()
    following = response.links.get("next")
    if following:
        raise LOOP(result=(ids, following["url"]))
    return ids


@task(max_retries=2, timeout=10)
async def fetch(item_id: str) -> dict:
    response = await iterflow.context.client.get(f"/items/{item_id}")
    response.raise_for_status()
    return response.json()


@task
def summarise(items: list[dict]) -> dict:
    return {"items": len(items), "characters": sum(item["length"] for item in items)}


with Flow("async pagination") as flow:
    ids = paginate.map(Parameter("sources", default=sorted(PAGES)))
    items = fetch.map(flatten(ids))
    summary = summarise(items)


async def main() -> None:
    with serve() as api:
        # The client is opened here, on this loop; `await flow.run_async()` awaits the
        # flow's async tasks on this same loop, so they can all use it. (A client
        # cannot be pickled, so it travels in the context, not as a recorded value.)
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            state = await flow.run_async(
                context={"client": client}, max_concurrency=MAX_CONCURRENCY
            )
    assert state.is_successful(), state
    for source, child in zip(sorted(PAGES), state.result[ids].map_states):
        print(f"{source:>6}: {child.loop_count} pages, {len(child.result)} ids")
    print("summary:", state.result[summary].result)
    print(f"item requests: {api.requests}, at most {api.most_in_flight} at once "
          f"(max_concurrency={MAX_CONCURRENCY})")


if __name__ == "__main__":
    asyncio.run(main())
