"""What keeps the server usable when clients are slow, many, gone, or a web page in the user's browser.

Two layers, because uvicorn has no timeout on request headers:

- `protocol(...)`: uvicorn's h11 protocol with a deadline on the request head (connect, or the first
  byte of the next request on a kept-alive connection, to the end of the headers; past it the
  connection gets 408 and is closed) and a cap on open connections: past the cap, the oldest
  connection that is idle or still sending its head makes room (a slowloris holds only those); if
  every connection is busy with a request, the new one gets 503. The cap stays well below the open
  file limit, so accept() never fails. Bodies have their own deadline in the app (408 with a message).
- `Guard`: an ASGI middleware that answers only requests meant for this server from a page allowed
  to use it. Host must be a loopback name, an IP address (a DNS-rebinding page always sends its own
  name, never an address) or one given with allow_hosts; a POST from a browser (it sends Origin)
  must come from the server's own origin (the page at /) or one given with allow_origins, and send
  JSON (a cross-site form can only send text/plain, form or multipart bodies). Clients that are
  not browsers (editors, curl: no Origin, no Sec-Fetch-Site) may send text/plain: the Code Clippy
  extension does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
import time
from collections.abc import Iterable
from typing import Any

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HEADER_TIMEOUT = 10.0  # seconds from connect (or the next request's first byte) to the end of its headers
BODY_TIMEOUT = 30.0  # seconds to receive a whole body once the headers are in
KEEP_ALIVE = 5.0  # seconds an idle kept-alive connection stays open
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; past it, 400


def max_connections_default() -> int:
    """Open connections at most: 256, and at most a quarter of the open file limit (the model's
    files, the tokenizer pool and JAX need descriptors too)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(256, soft // 4)) if soft != resource.RLIM_INFINITY else 256


def _host_name(value: str) -> str:
    """"[::1]:8080" → "::1", "LocalHost:80" → "localhost", "example.com." → "example.com"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: refuses requests for other hosts (400), cross-origin POSTs (403) and POST
    bodies of a type other than JSON (415), with the server's usual {"error", "detail"} body."""

    def __init__(self, app: Any, *, allow_hosts: Iterable[str] = (), allow_origins: Iterable[str] = ()):
        self.app = app
        self.hosts = {_host_name(h) for h in (*LOOPBACK_NAMES, *allow_hosts)}
        self.any_host = "*" in self.hosts
        self.origins = {o.rstrip("/").lower() for o in allow_origins}
        self.any_origin = "*" in self.origins

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, message = refusal
                body = json.dumps({"error": message, "detail": [{"loc": [], "msg": message, "type": "value_error"}]})
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
        host = headers.get("host", "")
        name = _host_name(host)
        if host and not (self.any_host or name in self.hosts or _is_address(name)):
            return 400, (f"Host {host!r} is not this server's; serve with --allow-host {name} "
                         "to answer requests for that name")
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            if not (self.any_origin or origin.lower() == own or origin.rstrip("/").lower() in self.origins):
                return 403, (f"cross-origin request from {origin!r} refused; serve with --allow-origin {origin} "
                             "to let pages from there use this server")
        elif site == "cross-site":
            return 403, "cross-site request refused (the browser sent no Origin)"
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        browser = origin is not None or site is not None
        if kind == "application/json" or (not browser and kind in ("", "text/plain")):
            return None
        return 415, f"the body must be JSON (Content-Type: application/json), not {kind or 'untyped'!r}"


def protocol(*, header_timeout: float = HEADER_TIMEOUT, max_connections: int | None = None) -> type:
    """uvicorn's h11 protocol with a deadline on request heads and a cap on open connections."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cap = max_connections or max_connections_default()

    class GuardedH11Protocol(H11Protocol):
        max_connections = cap

        def connection_made(self, transport) -> None:  # noqa: ANN001
            self._since = time.monotonic()
            self._head_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            if len(self.connections) > cap and not self._make_room():
                self._refuse(b"503 Service Unavailable", "too many connections; try again later")
                return
            self._arm()

        def _reading_head(self) -> bool:
            """Idle, or sending a request line and headers (no request in progress)."""
            return self.cycle is None or self.cycle.response_complete

        def _make_room(self) -> bool:
            idle = sorted((c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                           and c._reading_head() and not c.transport.is_closing()), key=lambda c: c._since)
            if not idle:
                return False
            idle[0]._refuse(b"408 Request Timeout", "closed to make room for another connection")
            return True

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._reading_head() and not self.transport.is_closing():
                self._refuse(b"408 Request Timeout", f"the request headers did not arrive within {header_timeout:g} s")

        def _refuse(self, status: bytes, message: str) -> None:
            body = json.dumps({"error": message, "detail": [{"loc": [], "msg": message, "type": "value_error"}]})
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
                                 + b"content-length: %d\r\n\r\n" % len(body) + body.encode())
            self._disarm()
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._reading_head():
                self._arm()  # the next request's head has begun: it must end in time too
            super().data_received(data)
            if not self._reading_head():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def server_config(app: Any, *, log_level: str = "info", header_timeout: float = HEADER_TIMEOUT,
                  max_connections: int | None = None) -> Any:
    """uvicorn's Config for `app` with the guarded protocol and explicit limits."""
    import uvicorn

    return uvicorn.Config(app, log_level=log_level, http=protocol(header_timeout=header_timeout,
                                                                   max_connections=max_connections),
                          timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
