"""Stream a request body into a blob store: hash, count and cap on the way.

Shared by every backend and every upload route, so the size limit, the
sha256 and the clean-up on failure are implemented exactly once. Chunks are
coalesced into batches so the blocking store is called a few times per MiB,
not once per socket read; a body that fits in the first batch costs one
store call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.concurrency import run_in_threadpool

from engines.http.errors import too_large
from engines.storage.base import BlobStore, BlobWriter, StoredBlob
from engines.storage.leases import UploadLeases

BATCH_BYTES = 1024 * 1024
HEAD_BYTES = 512

HeadCheck = Callable[[bytes], str]
"""Given the first bytes, return the content type to store (or raise)."""
KeyFor = Callable[[str], str]
"""Given the checked content type, return the blob key (extension included)."""


class _Ingest:
    def __init__(self, store: BlobStore, limit: int) -> None:
        self.store, self.limit = store, limit
        self.key = ""
        self.content_type = ""
        self.digest = hashlib.sha256()
        self.size = 0
        self.chunks: list[bytes] = []
        self.batched = 0
        self.writer: BlobWriter | None = None

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.limit)
        self.chunks.append(chunk)
        self.batched += len(chunk)

    def head(self, length: int) -> bytes:
        return b"".join(self.chunks)[:length]

    def take_batch(self) -> bytes:
        """The received chunks as one buffer: the only copy the bytes go through."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.batched = 0
        return data

    def write_batch(self, data: bytes) -> None:
        """Runs in a worker thread, beside the hashing of the same batch."""
        if self.writer is None:
            self.writer = self.store.open_writer(self.key, self.content_type)
        self.writer.write(data)

    def finish(self, data: bytes) -> None:
        self.digest.update(data)
        if self.writer is None:
            self.store.put_bytes(self.key, data, self.content_type)
            return
        self.writer.write(data)
        self.writer.commit()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


async def _drain(lanes: list[asyncio.Future[None]]) -> None:
    """Wait for every lane of the batch in flight, then raise the first failure."""
    if lanes:
        await asyncio.gather(*lanes, return_exceptions=True)
        for lane in lanes:
            lane.result()
        lanes.clear()


class _Keepalive:
    """Renews the upload's lease while bytes keep arriving (see `leases`)."""

    def __init__(self, leases: UploadLeases | None) -> None:
        self.leases = leases
        self.due = time.monotonic() + (leases.interval if leases else 0)
        self.held: str | None = None

    async def tick(self, writer: BlobWriter | None) -> None:
        if self.leases is None or writer is None or time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.leases.interval
        self.held = writer.lease_key
        await run_in_threadpool(self.leases.renew, writer.lease_key)

    async def release(self) -> None:
        if self.leases is not None and self.held is not None:
            await run_in_threadpool(self.leases.release, self.held)


async def ingest(store: BlobStore, chunks: AsyncIterator[bytes], *, limit: int,
                 head_check: HeadCheck, key_for: KeyFor,
                 leases: UploadLeases | None = None) -> tuple[StoredBlob, str]:
    """Write the stream; returns the blob and its checked content type.

    The first bytes are checked before anything is written. Over the limit
    -> PayloadTooLarge and nothing is kept; any failure (client gone, store
    down, cancellation) aborts the write before propagating. A long upload
    holds a lease that keeps `engines gc` from sweeping it mid-stream.
    """
    job = _Ingest(store, limit)
    lanes: list[asyncio.Future[None]] = []
    keepalive = _Keepalive(leases)
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            job.add(chunk)
            await keepalive.tick(job.writer)
            if not job.key and job.batched >= HEAD_BYTES:
                job.content_type = head_check(job.head(HEAD_BYTES))
                job.key = key_for(job.content_type)
            if job.batched >= BATCH_BYTES:
                # receive the next batch while this one is hashed and written, each
                # in its own worker thread (both release the GIL); one batch in flight
                data = job.take_batch()
                await _drain(lanes)
                lanes = [asyncio.ensure_future(run_in_threadpool(job.digest.update, data)),
                         asyncio.ensure_future(run_in_threadpool(job.write_batch, data))]
        await _drain(lanes)
        if not job.key:
            job.content_type = head_check(job.head(HEAD_BYTES))
            job.key = key_for(job.content_type)
        await run_in_threadpool(job.finish, job.take_batch())
    except BaseException:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await _drain(lanes)
            await run_in_threadpool(job.abort)
            await keepalive.release()
        raise
    await keepalive.release()
    blob = StoredBlob(key=job.key, uri=store.uri_for(job.key), size=job.size,
                      sha256=job.digest.hexdigest())
    return blob, job.content_type


async def ingest_bytes(store: BlobStore, key: str, data: bytes, content_type: str) -> StoredBlob:
    """Store an in-memory document (replay/audit JSON) with its hash."""
    uri = await run_in_threadpool(store.put_bytes, key, data, content_type)
    return StoredBlob(key=key, uri=uri, size=len(data), sha256=hashlib.sha256(data).hexdigest())
