"""AsyncArtifactClient: the same methods as ArtifactClient, awaited (one httpx.AsyncClient)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import anyio
import httpx

from engines.canvas_artifacts.models import ArtifactKindName as Kind
from engines.canvas_artifacts.models import ArtifactRecord, Lineage, SignedUrl
from engines.client import protocol
from engines.client.base import ClientBase
from engines.client.events import Event
from engines.client.protocol import Op, Sleep, Step
from engines.client.retry import Outcome
from engines.client.transfer import Destination, Progress, Source, Upload

T = TypeVar("T")


class AsyncArtifactClient(ClientBase):
    """ArtifactClient for asyncio (or trio): every method is a coroutine, `list` and
    `events` are async iterators. Same requests, retries and errors: both run the
    operations of `protocol`."""

    def _open(self, transport: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncArtifactClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ---- performing steps ---------------------------------------------------

    async def _run(self, op: Op[T]) -> T:
        run = protocol.Run(op)
        for step in run:
            run.outcome = await self._perform(step)
        return run.result

    async def _perform(self, step: Step) -> Outcome | None:
        if isinstance(step, Sleep):
            await anyio.sleep(step.seconds)
            return None
        body = step.body.achunks() if isinstance(step.body, Upload) else step.body
        request = self._http.build_request(step.method, step.url, params=step.params,
                                           headers=step.headers, content=body)
        try:
            response = await self._http.send(request, stream=True)
            try:
                if step.download is not None and response.is_success:
                    step.download.begin(response)
                    async for chunk in response.aiter_bytes():
                        step.download.write(chunk)
                else:
                    await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            return exc
        return response

    # ---- the calls: see ArtifactClient for what each does ---------------------

    async def create_preview(self, canvas: str, rev: int, source: Source,
                             mime_type: str | None = None, *,
                             idempotency_key: str | None = None,
                             progress: Progress | None = None) -> ArtifactRecord:
        return await self._run(protocol.create_preview(
            self._conn, canvas, rev, source, mime_type, idempotency_key, progress))

    async def create_render_ref(self, canvas: str, rev: int, uri: str,
                                mime_type: str | None = None, *,
                                idempotency_key: str | None = None) -> ArtifactRecord:
        return await self._run(protocol.create_render_ref(
            self._conn, canvas, rev, uri, mime_type, idempotency_key))

    async def create_replay(self, canvas: str, replay: Mapping[str, Any] | Source, *,
                            idempotency_key: str | None = None,
                            progress: Progress | None = None) -> ArtifactRecord:
        return await self._run(protocol.create_replay(
            self._conn, canvas, replay, idempotency_key, progress))

    async def create_audit(self, canvas: str, rev: int,
                           report: Mapping[str, Any] | None = None, *,
                           idempotency_key: str | None = None) -> ArtifactRecord:
        return await self._run(protocol.create_audit(
            self._conn, canvas, rev, report, idempotency_key))

    async def get(self, canvas: str, artifact_id: str) -> ArtifactRecord:
        return await self._run(protocol.get(self._conn, canvas, artifact_id))

    async def content(self, canvas: str, artifact_id: str, destination: Destination, *,
                      from_ms: int | None = None, to_ms: int | None = None,
                      progress: Progress | None = None) -> int:
        return await self._run(protocol.content(
            self._conn, canvas, artifact_id, destination, from_ms, to_ms, progress))

    async def list(self, canvas: str, *, kind: Kind | None = None, rev: int | None = None,
                   page_size: int = 100) -> AsyncIterator[ArtifactRecord]:
        pager = protocol.pages(self._conn, canvas, kind, rev, page_size)
        while (page := pager.next_page()) is not None:
            for record in await self._run(page):
                yield record

    async def latest(self, canvas: str, kind: Kind) -> ArtifactRecord:
        return await self._run(protocol.latest(self._conn, canvas, kind))

    async def lineage(self, canvas: str, artifact_id: str) -> Lineage:
        return await self._run(protocol.lineage(self._conn, canvas, artifact_id))

    async def export(self, canvas: str, destination: Destination, *,
                     kind: Kind | None = None, progress: Progress | None = None) -> int:
        return await self._run(protocol.export(
            self._conn, canvas, destination, kind, progress))

    async def delete(self, canvas: str, artifact_id: str) -> None:
        await self._run(protocol.delete(self._conn, canvas, artifact_id))

    async def signed_url(self, canvas: str, artifact_id: str, *, ttl_seconds: int = 300,
                         w: int | None = None, h: int | None = None,
                         format: str | None = None, q: int | None = None) -> SignedUrl:
        return await self._run(protocol.signed_url(
            self._conn, canvas, artifact_id, ttl_seconds,
            {"w": w, "h": h, "format": format, "q": q}))

    async def events(self, canvas: str | None,
                     after: int | None = None) -> AsyncIterator[Event]:
        feed = protocol.EventFeed(self._conn, canvas, after)
        while True:
            send = feed.request()
            outcome: Outcome | None = None
            try:
                async with self._http.stream(send.method, send.url, headers=send.headers,
                                             timeout=self._stream_timeout) as response:
                    if feed.opened(response):
                        async for line in response.aiter_lines():
                            if (event := feed.line(line)) is not None:
                                yield event
                    else:
                        await response.aread()
                        outcome = response
            except httpx.TransportError as exc:
                outcome = exc
            await anyio.sleep(feed.pause(outcome))
