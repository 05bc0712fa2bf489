"""ArtifactClient: the blocking client (one httpx.Client, thread-safe like it)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

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


class ArtifactClient(ClientBase):
    """A canvas artifact store, as one tenant/env/project sees it.

    Every create sends an `Idempotency-Key` (yours, or a fresh one) that its
    retries repeat, so a retry after a lost answer returns the artifact the
    first attempt made. Failures raise `ArtifactError`.
    """

    def _open(self, transport: Any) -> httpx.Client:
        return httpx.Client(timeout=self._timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- performing steps ---------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        run = protocol.Run(op)
        for step in run:
            run.outcome = self._perform(step)
        return run.result

    def _perform(self, step: Step) -> Outcome | None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        body = step.body.chunks() if isinstance(step.body, Upload) else step.body
        request = self._http.build_request(step.method, step.url, params=step.params,
                                           headers=step.headers, content=body)
        try:
            response = self._http.send(request, stream=True)
            try:
                if step.download is not None and response.is_success:
                    step.download.begin(response)
                    for chunk in response.iter_bytes():
                        step.download.write(chunk)
                else:
                    response.read()
            finally:
                response.close()
        except httpx.TransportError as exc:
            return exc
        return response

    # ---- creates --------------------------------------------------------------

    def create_preview(self, canvas: str, rev: int, source: Source,
                       mime_type: str | None = None, *, idempotency_key: str | None = None,
                       progress: Progress | None = None) -> ArtifactRecord:
        """An image preview from a path, bytes or a binary file, streamed. Without
        `mime_type` the service reads the type from the bytes (PNG, JPEG, WebP, SVG, HTML)."""
        return self._run(protocol.create_preview(self._conn, canvas, rev, source, mime_type,
                                                 idempotency_key, progress))

    def create_render_ref(self, canvas: str, rev: int, uri: str, mime_type: str | None = None,
                          *, idempotency_key: str | None = None) -> ArtifactRecord:
        """A preview that points at a render which already exists (`https://` or our bucket)."""
        return self._run(protocol.create_render_ref(self._conn, canvas, rev, uri, mime_type,
                                                    idempotency_key))

    def create_replay(self, canvas: str, replay: Mapping[str, Any] | Source, *,
                      idempotency_key: str | None = None,
                      progress: Progress | None = None) -> ArtifactRecord:
        """A replay: a mapping `{"rev", "keyframes", "summary", ...}`, or that JSON as a
        path, bytes or file (streamed; the service checks it as it arrives)."""
        return self._run(protocol.create_replay(self._conn, canvas, replay, idempotency_key,
                                                progress))

    def create_audit(self, canvas: str, rev: int, report: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None) -> ArtifactRecord:
        """An audit report; without one, the service's pending placeholder."""
        return self._run(protocol.create_audit(self._conn, canvas, rev, report,
                                               idempotency_key))

    # ---- reads --------------------------------------------------------------

    def get(self, canvas: str, artifact_id: str) -> ArtifactRecord:
        return self._run(protocol.get(self._conn, canvas, artifact_id))

    def content(self, canvas: str, artifact_id: str, destination: Destination, *,
                from_ms: int | None = None, to_ms: int | None = None,
                progress: Progress | None = None) -> int:
        """Stream the payload into a path (written whole or not at all) or a binary file;
        returns its size. A render-ref is followed to its URI (without our headers);
        `from_ms`/`to_ms` cut a replay to a window."""
        return self._run(protocol.content(self._conn, canvas, artifact_id, destination,
                                          from_ms, to_ms, progress))

    def list(self, canvas: str, *, kind: Kind | None = None, rev: int | None = None,
             page_size: int = 100) -> Iterator[ArtifactRecord]:
        """Every artifact of the canvas, newest first, reading page after page as needed."""
        pager = protocol.pages(self._conn, canvas, kind, rev, page_size)
        while (page := pager.next_page()) is not None:
            yield from self._run(page)

    def latest(self, canvas: str, kind: Kind) -> ArtifactRecord:
        """The newest artifact of a kind: highest rev, then newest."""
        return self._run(protocol.latest(self._conn, canvas, kind))

    def lineage(self, canvas: str, artifact_id: str) -> Lineage:
        return self._run(protocol.lineage(self._conn, canvas, artifact_id))

    def export(self, canvas: str, destination: Destination, *, kind: Kind | None = None,
               progress: Progress | None = None) -> int:
        """The canvas's tar (`manifest.jsonl`, then each payload) into a path or file;
        returns its size."""
        return self._run(protocol.export(self._conn, canvas, destination, kind, progress))

    # ---- other writes -------------------------------------------------------

    def delete(self, canvas: str, artifact_id: str) -> None:
        self._run(protocol.delete(self._conn, canvas, artifact_id))

    def signed_url(self, canvas: str, artifact_id: str, *, ttl_seconds: int = 300,
                   w: int | None = None, h: int | None = None, format: str | None = None,
                   q: int | None = None) -> SignedUrl:
        """A header-free URL of the content (or of one image variant) for `ttl_seconds`."""
        return self._run(protocol.signed_url(self._conn, canvas, artifact_id, ttl_seconds,
                                             {"w": w, "h": h, "format": format, "q": q}))

    # ---- events -------------------------------------------------------------

    def events(self, canvas: str | None, after: int | None = None) -> Iterator[Event]:
        """The canvas's events (None: every canvas of the tenant/env), live, after seq
        `after` if given. Endless: a dropped stream is reopened with `Last-Event-ID`,
        so nothing is missed and nothing repeated; stop by leaving the loop."""
        feed = protocol.EventFeed(self._conn, canvas, after)
        while True:
            send = feed.request()
            outcome: Outcome | None = None
            try:
                with self._http.stream(send.method, send.url, headers=send.headers,
                                       timeout=self._stream_timeout) as response:
                    if feed.opened(response):
                        for line in response.iter_lines():
                            if (event := feed.line(line)) is not None:
                                yield event
                    else:
                        response.read()
                        outcome = response
            except httpx.TransportError as exc:
                outcome = exc
            time.sleep(feed.pause(outcome))
