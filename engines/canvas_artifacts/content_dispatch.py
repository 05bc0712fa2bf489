"""What `GET .../content` answers for one artifact record.

An image variant (`variants/`), a render-ref's redirect, a replay window (read
through the replay's index), or the stored bytes; the bytes themselves are
served by `content.py` (ETag, Range, safe headers).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.content import presign_ttl, serve_blob, serve_render_ref
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.reads import confirm_live
from engines.canvas_artifacts.replay import read_window
from engines.canvas_artifacts.replay_ingest import ENVELOPE_MAX_BYTES
from engines.canvas_artifacts.replay_store import json_reader
from engines.canvas_artifacts.variants.query import VariantQuery
from engines.canvas_artifacts.variants.service import serve_variant
from engines.db.engine import retry_on_disconnect
from engines.http.errors import ServiceUnavailable, Unprocessable
from engines.runtime import Runtime
from engines.storage.base import BlobNotFound

# the head is the envelope plus `{` and `,"keyframes":[`
MAX_WINDOW_HEAD = ENVELOPE_MAX_BYTES + 16


def _replay_window(rt: Runtime, index: dict[str, Any] | None, key: str, low: int,
                   high: int | None) -> bytes:
    if index is None:
        raise ServiceUnavailable("replay index missing", code="storage.index_missing")
    if index["head"] > MAX_WINDOW_HEAD:
        # stored before the envelope limit: every window would parse and resend all of it
        raise Unprocessable("this replay's envelope is over the 64 KiB a window may carry; "
                            "fetch the whole content instead", code="replay.envelope_too_large")
    reader = json_reader(rt.store, index)
    return read_window(index, lambda start, end: reader.read_all(key, start, end - 1),
                       low, high)


async def content(rt: Runtime, request: Request, record: ArtifactRecord, *,
                  from_ms: int | None, to_ms: int | None, inline: bool,
                  variant: VariantQuery | None = None) -> Response:
    """The payload: bytes, an image variant, a replay window, or a redirect for render-refs.

    A missing blob is an outage (503 `storage.blob_missing`) only if the record is
    live: a record read from the cache, or just before a delete committed, may
    name an artifact that is gone, and that is a 404."""
    try:
        return await _content(rt, request, record, from_ms=from_ms, to_ms=to_ms,
                              inline=inline, variant=variant)
    except BlobNotFound:
        await confirm_live(rt, record)
        raise


async def _content(rt: Runtime, request: Request, record: ArtifactRecord, *,
                   from_ms: int | None, to_ms: int | None, inline: bool,
                   variant: VariantQuery | None) -> Response:
    if variant is not None:
        return await serve_variant(rt, request, record, variant, inline=inline)
    key = rt.store.key_for(record.uri)
    if record.meta.get("render_ref"):
        return await serve_render_ref(request, rt.store, key, record, inline=inline,
                                      presign_ttl=rt.settings.presign_ttl_seconds)
    if key is None:
        raise ServiceUnavailable("the artifact's blob is not in the configured store",
                                 code="storage.foreign_uri")
    if from_ms is not None or to_ms is not None:
        if record.kind != "replay":
            raise Unprocessable("from_ms/to_ms apply to replays only", code="request.invalid")
        if from_ms is not None and to_ms is not None and to_ms < from_ms:
            raise Unprocessable("to_ms must be >= from_ms", code="request.invalid")
        window = await run_in_threadpool(_replay_window, rt, await _replay_index(rt, record),
                                         key, from_ms or 0, to_ms)
        return Response(window, media_type="application/json",
                        headers={"X-Content-Type-Options": "nosniff"})
    reader = rt.store
    if record.kind == "replay":
        reader = json_reader(rt.store, await _replay_index(rt, record))
    return await serve_blob(request, reader, key, record, inline=inline,
                            presign_ttl=presign_ttl(rt.settings))


@retry_on_disconnect
def _stored_index(rt: Runtime, record: ArtifactRecord) -> dict[str, Any] | None:
    with rt.engine.connect() as conn:
        return repo.get_replay_index(conn, record)


async def _replay_index(rt: Runtime, record: ArtifactRecord) -> dict[str, Any] | None:
    """A replay's index; None only for a live replay stored before indexes (a delete
    removes the index, so a missing one may mean a stale record: `confirm_live`)."""
    index = await run_in_threadpool(_stored_index, rt, record)
    if index is None:
        await confirm_live(rt, record)
    return index
