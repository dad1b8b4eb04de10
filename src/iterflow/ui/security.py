"""What every response of the dashboard goes through: the token, and the security headers.

A pure ASGI middleware, so it covers everything the app serves — pages,
fragments, the SSE streams and the static assets alike:

* **Token.** When the app has one (any host but loopback requires it), a
  request must carry it as ``Authorization: Bearer <token>``, as
  ``?token=<token>`` (which also sets an ``HttpOnly``, ``SameSite=Strict``
  cookie, so links and assets work after the first visit), or in that
  cookie. Anything else gets ``401`` and nothing more. Tokens are compared in
  constant time.
* **Headers.** A strict Content-Security-Policy (``self`` only: no inline
  scripts or styles, no frames of us anywhere), ``X-Content-Type-Options:
  nosniff``, ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``
  for older browsers.
* **Methods.** The dashboard only reads: ``GET`` and ``HEAD``; with
  ``read_only`` anything else is refused before it reaches a route.
* **Host names.** With ``allowed_hosts`` (``iterflow ui`` on loopback
  without a token passes this machine's names), a request naming any other
  host gets ``421``: a web page elsewhere cannot point a name of its own at
  127.0.0.1 (DNS rebinding) and read the runs through the visitor's browser.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["COOKIE", "CSP", "SecurityMiddleware"]

COOKIE = "iterflow_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_READING = frozenset({"GET", "HEAD"})


class SecurityMiddleware:
    """Checks the token (when there is one) and adds the security headers (module doc)."""

    def __init__(
        self,
        app: Any,
        *,
        token: str | None = None,
        read_only: bool = False,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.read_only = read_only
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None and _host(scope) not in self.allowed_hosts:
            await _plain(send, 421, b"421 Misdirected Request: unexpected Host header.\n", [])
            return
        set_cookie = False
        if self.token is not None:
            given, from_query = self._presented(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _plain(send, 401, b"401 Unauthorized: this dashboard needs its token.\n",
                             [(b"www-authenticate", b'Bearer realm="iterflow"')])
                return
            set_cookie = from_query
        if self.read_only and scope["method"] not in _READING:
            await _plain(send, 403, b"403 Forbidden: the dashboard is read-only.\n", [])
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _NAMES]
                headers += _HEADERS
                if set_cookie:
                    assert self.token is not None
                    headers.append((
                        b"set-cookie",
                        f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode(),
                    ))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _presented(scope: dict[str, Any]) -> tuple[str | None, bool]:
        """The token the request carries, and whether it came in the query string."""
        cookie_value = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credential.strip():
                    return credential.strip(), False
            elif name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # a malformed cookie header is just no token
                    continue
                if COOKIE in jar:
                    cookie_value = jar[COOKIE].value
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], True
        return cookie_value, False


_NAMES = frozenset(name for name, _ in _HEADERS)


def _host(scope: dict[str, Any]) -> str:
    """The host name the request names, without its port, lower case."""
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # [::1]:4200
                return host[1:].split("]", 1)[0]
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


async def _plain(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), *extra, *_HEADERS],
    })
    await send({"type": "http.response.body", "body": body})
