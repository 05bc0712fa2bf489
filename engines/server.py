"""uvicorn with the limits it lacks on a request head: size, time, connections.

uvicorn bounds neither the size of a request head (httptools buffers a
header line of any length: 100 MB cost 300 MB of RSS) nor the time a client
may take to send it (its keep-alive timer only covers idle connections, so a
socket dribbling a partial head stays open for as long as it likes). This
protocol counts the bytes and the seconds of every request head:

- more than `MAX_HEADER_BYTES` before the head is complete: 431 and close,
  having buffered at most that plus one socket read;
- a head not complete `HEADER_TIMEOUT` seconds after the connection opened
  (or after its first byte, for later requests on a kept-alive connection):
  408 (or a plain close if nothing came) and close.

`MAX_CONNECTIONS` caps open connections per process with uvicorn's own
`limit_concurrency`: a request on a connection beyond it answers 503 and
the connection is closed.

`listen` and `run` start uvicorn on a socket bound beforehand, so that
`engines serve` can say "serving on" only once that is true, and a port
already taken is one line and an exit code rather than a log after the banner.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from engines.config import Settings, get_settings

PROTOCOL = "engines.server:GuardedHttpToolsProtocol"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn knobs `engines serve` runs with (the bench's bare app uses them too)."""
    # uvicorn answers 503 once open connections (this one included) reach the limit
    return {"http": PROTOCOL, "limit_concurrency": settings.max_connections + 1,
            "timeout_keep_alive": 30}


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket, inherited by every worker (as uvicorn binds its own).

    Listening at once means a connection made the moment `serve` says it is up
    waits in the backlog until a worker accepts it, instead of being refused.
    Raises OSError (port taken, address not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(config: uvicorn.Config, sock: socket.socket) -> bool:
    """Serve on `sock` (one process, or `config.workers` under uvicorn's supervisor)
    until shut down; False if a single process failed to start (its lifespan)."""
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
        return True
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return server.started


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.head_limit = settings.max_header_bytes
        self.head_timeout = settings.header_timeout
        self.head_bytes = 0
        self.in_head = True  # a new connection owes us a request head
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if not self.in_head or self.transport.is_closing():
            return
        # the head is still incomplete after this read: every byte of it was head
        self.head_bytes += len(data)
        if self.head_bytes > self.head_limit:
            self._refuse_oversize()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0
        if self.head_timer is None and not self.refused:
            self._start_head_clock()

    def on_headers_complete(self) -> None:
        """A head that arrived whole in one read is measured here, before any app sees it."""
        self.in_head = False
        self._stop_head_clock()
        if self.refused:
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.head_limit:
            self._refuse_oversize()
            return
        super().on_headers_complete()

    # the rest of a refused read still goes through the parser: it must reach no request
    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def _refuse_oversize(self) -> None:
        self._refuse(431, "request.header_too_large",
                     f"request head exceeds {self.head_limit} bytes")

    def _start_head_clock(self) -> None:
        self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_bytes:
            self._refuse(408, "request.timeout",
                         f"request head not received within {self.head_timeout:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with the usual error envelope, outside any request, and hang up."""
        self.refused = True
        self._stop_head_clock()
        body = orjson.dumps({"error": {"code": code, "message": message,
                                       "request_id": uuid.uuid4().hex}})
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        self.transport.close()
