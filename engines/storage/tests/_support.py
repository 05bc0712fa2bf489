"""Helpers shared by the blob store tests (local and S3).

`stream_upload` drives the ASGI app directly, one body chunk per `receive`,
so a test can observe the store between chunks and can make the client
vanish mid-body, which no HTTP test client lets you do.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.types import ASGIApp, Message

from conftest import PNG
from engines.http.sniff import head_checker
from engines.storage.base import BlobStore, StoredBlob
from engines.storage.ingest import ingest

MIB = 1024 * 1024
KEY = "tenants/t_acme/dev/canvas/c_1/preview/art_1.png"


def png_body(size: int) -> bytes:
    """A body that sniffs as PNG: the PNG header followed by random bytes."""
    return PNG[:16] + os.urandom(size - 16)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest_png(store: BlobStore, body: AsyncIterator[bytes],
               limit: int = 64 * MIB) -> tuple[StoredBlob, str]:
    """Run `ingest` of a PNG body under KEY, outside any server."""
    return asyncio.run(ingest(store, body, limit=limit, head_check=head_checker("image/png"),
                              key_for=lambda _mime: KEY))


def stream_upload(app: ASGIApp, path: str, query: str, headers: dict[str, str],
                  chunks: Sequence[bytes], *, disconnect: bool,
                  before_chunk: Callable[[int], None] = lambda _i: None,
                  ) -> tuple[list[Message], BaseException | None]:
    """POST chunks to the app; with disconnect the client leaves instead of finishing.

    `before_chunk(i)` runs before chunk i is handed over, i.e. after the app
    has finished processing chunks 0..i-1. Returns the ASGI messages sent and
    the exception the app re-raised to the server, if any (Starlette re-raises
    unhandled errors after answering 500, as a server would log them).
    """
    sent: list[Message] = []
    raised: list[BaseException] = []

    async def run() -> None:
        index = 0

        async def receive() -> Message:
            nonlocal index
            if index < len(chunks):
                before_chunk(index)
                chunk = chunks[index]
                index += 1
                more = disconnect or index < len(chunks)
                return {"type": "http.request", "body": chunk, "more_body": more}
            if disconnect:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # a live client that has sent everything
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        try:
            await app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - reported to the caller to assert on
            raised.append(exc)

    asyncio.run(run())
    return sent, (raised[0] if raised else None)


def status_of(messages: list[Message]) -> int | None:
    for message in messages:
        if message["type"] == "http.response.start":
            return int(message["status"])
    return None


async def chunks_then_fail(chunks: Sequence[bytes], error: Exception) -> AsyncIterator[bytes]:
    """An upload body that breaks after its chunks, like a client that goes away."""
    for chunk in chunks:
        yield chunk
    raise error
