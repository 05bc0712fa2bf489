"""The baseline: a bare ASGI app in the service's server stack, doing only the raw work.

No framework, no auth, no validation, no metadata: `POST /blobs` writes the
request body to the very blob store the service is configured with
(`build_blob_store(settings).put_bytes`, in a worker thread like the
service's blocking calls), `GET /blobs?key=K` serves an object back,
`POST /blobs/stream` streams a body of any size to the store's writer in
~1 MiB batches (what the service's ingest does, minus hashing and checks). It runs
under uvicorn with the same worker count and defaults (uvloop, httptools) as
`engines serve`, so the service/baseline ratio is the cost of the service's
own logic.

    python -m bench.baseline --host 127.0.0.1 --port 8020 --workers 2
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson

from engines.config import get_settings
from engines.server import uvicorn_options
from engines.storage.base import BlobNotFound
from engines.storage.factory import build_blob_store

PREFIX = "bench-baseline"
BATCH = 1024 * 1024


def create_app() -> Any:
    store = build_blob_store(get_settings())

    async def respond(send, status: int, body: bytes,
                      content_type: bytes = b"application/json") -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/blobs" and method == "POST":
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            data = b"".join(chunks)
            key = f"{PREFIX}/{uuid.uuid4().hex}"
            uri = await anyio.to_thread.run_sync(store.put_bytes, key, data,
                                                 "application/octet-stream")
            await respond(send, 201, orjson.dumps({"key": key, "uri": uri, "size": len(data)}))
        elif path == "/blobs/stream" and method == "POST":
            # the same streaming shape as the service's ingest, minus its logic: batch
            # ~1 MiB, hand each batch to the store's writer in a thread, commit at the end
            key = f"{PREFIX}/{uuid.uuid4().hex}"
            writer = await anyio.to_thread.run_sync(store.open_writer, key,
                                                    "application/octet-stream")
            batch, size, more = bytearray(), 0, True
            try:
                while more:
                    message = await receive()
                    batch += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(batch) >= BATCH or (not more and batch):
                        data = bytes(batch)
                        batch.clear()
                        size += len(data)
                        await anyio.to_thread.run_sync(writer.write, data)
                await anyio.to_thread.run_sync(writer.commit)
            except BaseException:
                await anyio.to_thread.run_sync(writer.abort)
                raise
            await respond(send, 201, orjson.dumps({"key": key, "size": size}))
        elif path == "/blobs" and method == "DELETE":
            key = parse_qs(scope["query_string"].decode()).get("key", [""])[0]
            await anyio.to_thread.run_sync(store.delete, key)
            await respond(send, 204, b"")
        elif path == "/blobs" and method == "GET":
            key = parse_qs(scope["query_string"].decode()).get("key", [""])[0]
            try:
                data = await anyio.to_thread.run_sync(store.read_all, key)
            except BlobNotFound:
                await respond(send, 404, b'{"error":"not found"}')
                return
            await respond(send, 200, data, b"application/octet-stream")
        else:
            await respond(send, 404, b'{"error":"no route"}')

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8020)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # The same uvicorn knobs as `engines serve` (see engines/server.py), access log off.
    uvicorn.run("bench.baseline:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning", access_log=False,
                **uvicorn_options(get_settings()))


if __name__ == "__main__":
    main()
