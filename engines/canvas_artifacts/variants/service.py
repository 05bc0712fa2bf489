"""Serving a variant: the stored one, or rendered and stored on its first request."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.canvas_artifacts.content import presign_ttl, serve_blob
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.variants.ids import variant_key, variant_record_id
from engines.canvas_artifacts.variants.pool import render_executor, render_limiter
from engines.canvas_artifacts.variants.query import VariantQuery
from engines.canvas_artifacts.variants.render import render
from engines.canvas_artifacts.variants.repository import VARIANT_KIND, find_variant, record_variant
from engines.canvas_artifacts.variants.spec import VariantSpec, resolve
from engines.http.errors import NotFound, ServiceUnavailable
from engines.media_v2.models import DerivedArtifact
from engines.runtime import Runtime
from engines.storage.ingest import ingest_bytes


async def _render_and_store(rt: Runtime, record: ArtifactRecord, spec: VariantSpec,
                            variant_id: str) -> DerivedArtifact:
    source_key = rt.store.key_for(record.uri)
    if source_key is None:
        raise ServiceUnavailable("the artifact's blob is not in the configured store",
                                 code="storage.foreign_uri")
    async with render_limiter():
        # a request for the same variant may have stored it while this one waited
        stored = await run_in_threadpool(find_variant, rt, record.tenant_id, record.env,
                                         variant_id)
        if stored is not None:
            return stored
        data = await run_in_threadpool(rt.store.read_all, source_key)
        rendered = await asyncio.get_running_loop().run_in_executor(
            render_executor(), render, data, spec, rt.settings.max_image_pixels)
        sha256 = hashlib.sha256(rendered.data).hexdigest()
        # the final write is atomic in both stores: a reader never sees half a variant
        blob = await ingest_bytes(rt.store, variant_key(record, spec, sha256), rendered.data,
                                  spec.mime_type)
        derived = DerivedArtifact(
            id=variant_id, parent_asset_id=record.media_asset_id, tenant_id=record.tenant_id,
            env=record.env, kind=VARIANT_KIND, uri=blob.uri, created_at=datetime.now(UTC),
            meta={"source_artifact_id": record.id, "canvas_id": record.canvas_id,
                  "w": spec.w, "h": spec.h, "format": spec.format, "q": spec.q,
                  "width": rendered.width, "height": rendered.height,
                  "mime_type": spec.mime_type, "sha256": blob.sha256,
                  "size_bytes": blob.size})
        # On a failed insert the blob stays: a concurrent identical render may own the same
        # key. An unreferenced one is an orphan for `engines gc`.
        try:
            winner = await run_in_threadpool(record_variant, rt, record, derived)
        except NotFound:
            await rt.discard_fresh_blob(blob.key)
            raise
    if winner.uri != blob.uri:  # a concurrent render with other bytes won
        await rt.discard_fresh_blob(blob.key)
    return winner


async def serve_variant(rt: Runtime, request: Request, record: ArtifactRecord,
                        query: VariantQuery, *, inline: bool) -> Response:
    """The stored variant (rendered on first request) with the same rules as /content."""
    spec = resolve(rt.settings, record, query, request.headers.get("accept", ""))
    variant_id = variant_record_id(record, spec)
    variant = rt.variants.get(variant_id) or await run_in_threadpool(
        find_variant, rt, record.tenant_id, record.env, variant_id)
    if variant is None:
        variant = await _render_and_store(rt, record, spec, variant_id)
    key = rt.store.key_for(variant.uri)
    if key is None:
        raise ServiceUnavailable("the variant's blob is not in the configured store",
                                 code="storage.foreign_uri")
    view = record.model_copy(update={
        "uri": variant.uri, "mime_type": variant.meta["mime_type"],
        "size_bytes": variant.meta["size_bytes"], "sha256": variant.meta["sha256"]})
    response = await serve_blob(request, rt.store, key, view, inline=inline,
                                presign_ttl=presign_ttl(rt.settings))
    if query.format == "auto":
        response.headers["Vary"] = "Accept"
    return response
