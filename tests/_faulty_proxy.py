"""A small HTTP proxy in front of the real server that fails on request.

Each queued `Fault` is used once, by the first request it matches:
- `status`: answer that status itself (with `Retry-After` if given); the
  request never reaches the server;
- `drop`: forward the request, let the server answer it in full, then send
  the client the status line and close the connection before the body (the
  client has no answer, the server did the work: the case idempotency keys
  exist for);
- `cut_after`: stream the answer until that many SSE events went through
  (0: only the stream's opening), then close the connection mid-stream;
- `hold`: forward the request only once that threading.Event is set.
Every request that reaches the proxy is recorded (method, path, headers).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx

from engines.events.tests.sse_client import serve_in_thread

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Dropped(Exception):
    """Raised inside the proxy to make uvicorn close the client's connection."""


@dataclass
class Fault:
    method: str
    path_suffix: str
    status: int | None = None
    retry_after: str | None = None
    drop: bool = False
    cut_after: int | None = None
    hold: threading.Event | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FaultyProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def add(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def requests(self, method: str, path_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.endswith(path_suffix)]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and path.endswith(fault.path_suffix):
                self.faults.remove(fault)
                return fault
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        self.seen.append(Seen(method, path, headers))
        fault = self._fault_for(method, path)
        if fault is not None and fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            await send({"type": "http.response.start", "status": fault.status,
                        "headers": [(b"content-type", b"application/json"), *extra]})
            await send({"type": "http.response.body", "body": b'{"error": {"code": '
                        b'"proxy.injected", "message": "injected", "request_id": "proxy"}}'})
            return
        if fault is not None and fault.hold is not None:
            await anyio.to_thread.run_sync(fault.hold.wait)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        forward = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        url = f"{self.upstream}{path}" + (f"?{scope['query_string'].decode()}"
                                          if scope["query_string"] else "")
        timeout = httpx.Timeout(30, read=120)
        async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
                method, url, headers=forward, content=body) as response:
            out = [(k.encode(), v.encode()) for k, v in response.headers.items()
                   if k.lower() not in HOP_BY_HOP]
            if fault is not None and fault.drop:
                await response.aread()
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": [*out, (b"content-length",
                                               str(len(response.content) or 1).encode())]})
                raise Dropped("answer dropped on purpose")
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": out})
            events = 0
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                events += chunk.count(b"\nevent: ")
                if fault is not None and fault.cut_after is not None \
                        and events >= fault.cut_after:
                    raise Dropped("stream cut on purpose")
            await send({"type": "http.response.body", "body": b""})


@contextlib.contextmanager
def faulty_proxy(upstream: str) -> Iterator[tuple[FaultyProxy, str]]:
    """The proxy in front of `upstream`, served on loopback; yields it and its URL."""
    proxy = FaultyProxy(upstream)
    with serve_in_thread(proxy) as url:  # type: ignore[arg-type]
        yield proxy, url
