"""media_v2 logic: assets (uploads or registered URIs) and derived artifacts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy import Connection
from starlette.datastructures import UploadFile
from starlette.responses import Response

from engines.auth.routing import RequestContext
from engines.common.ids import new_id
from engines.create import Created, Replayed, create_stored
from engines.db.engine import retry_on_disconnect
from engines.db.idempotency import IdempotencyClaim, claim_from
from engines.db.metadata import row_exists
from engines.http.body import read_upload, upload_chunks
from engines.http.errors import NotFound, Unprocessable
from engines.media_v2 import repository as repo
from engines.media_v2.models import (
    ArtifactCreate,
    AssetCreate,
    AssetDetail,
    AssetList,
    DerivedArtifact,
    MediaAsset,
)
from engines.media_v2.upload_type import upload_checker
from engines.observability import metrics
from engines.runtime import Runtime
from engines.storage.base import StoredBlob
from engines.storage.ingest import ingest
from engines.storage.keys import media_key
from engines.storage.uris import check_uri_in_scope

_KIND_BY_PREFIX = {"video/": "video", "audio/": "audio", "image/": "image"}


def ensure_canvas_asset(conn: Connection, tenant_id: str, env: str, canvas_id: str,
                        actor_id: str, asset_id: str, now: datetime) -> None:
    """The canvas's asset, created on first use (a no-op afterwards, race-free)."""
    asset = MediaAsset(id=asset_id, tenant_id=tenant_id, env=env, user_id=actor_id, kind="other",
                       source_uri=f"canvas://{canvas_id}", source_ref=f"canvas:{canvas_id}",
                       created_at=now, meta={"canvas_id": canvas_id})
    repo.insert_asset(conn, asset, if_absent=True)


def _kind_for(content_type: str | None) -> str:
    for prefix, kind in _KIND_BY_PREFIX.items():
        if (content_type or "").startswith(prefix):
            return kind
    return "other"


async def _created(rt: Runtime, claim: IdempotencyClaim | None, body_sha256: str,
                   model: MediaAsset | DerivedArtifact, write: Callable[[Connection], None],
                   blob: StoredBlob | None = None) -> Created[Any] | Replayed:
    """Commit write(conn) through the create protocol (`engines/create.py`)."""
    table = repo.assets if isinstance(model, MediaAsset) else repo.artifacts
    return await create_stored(rt, model, orjson.dumps(model.model_dump(mode="json")), write,
                               lambda conn: row_exists(conn, table, model.id),
                               record_id=model.id, blob=blob, claim=claim,
                               body_sha256=body_sha256)


def _check_part_headers(upload: UploadFile) -> None:
    """No control characters in the part's filename or content type.

    Both are kept in the record and sent to S3, where a NUL (PostgreSQL) or
    CR/LF (an HTTP header) fails as a 5xx instead of the client's 422.
    """
    for what, value in (("filename", upload.filename), ("content type", upload.content_type)):
        if value and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise Unprocessable(f"the file's {what} must not contain control characters",
                                code="media_v2.invalid_upload")


async def create_asset_upload(rt: Runtime, ctx: RequestContext, actor_id: str,
                              request: Request) -> Response:
    limit = rt.settings.max_preview_bytes
    claim = claim_from(request, ctx, actor_id)  # a bad key is refused before anything is stored
    async with read_upload(request, limit, code="media_v2.missing_file") as upload:
        _check_part_headers(upload)
        asset_id = new_id("ma")
        key = media_key(ctx.tenant_id, ctx.env, asset_id, upload.filename)
        blob, content_type = await ingest(rt.store, upload_chunks(upload), limit=limit,
                                          head_check=upload_checker(upload.content_type),
                                          key_for=lambda _t: key, leases=rt.leases)
    asset = MediaAsset(id=asset_id, tenant_id=ctx.tenant_id, env=ctx.env, user_id=actor_id,
                       kind=_kind_for(content_type), source_uri=blob.uri, size_bytes=blob.size,
                       created_at=datetime.now(UTC),
                       meta={"filename": upload.filename, "content_type": content_type,
                             "sha256": blob.sha256})
    fingerprint = hashlib.sha256(f"{upload.filename}\n{blob.sha256}".encode()).hexdigest()
    outcome = await _created(rt, claim, fingerprint, asset,
                             lambda conn: repo.insert_asset(conn, asset), blob)
    if isinstance(outcome, Created):
        metrics.record_created("media_asset", blob.size, tenant=ctx.tenant_id, env=ctx.env)
    return outcome.response()


async def create_asset_json(rt: Runtime, ctx: RequestContext, actor_id: str, body: AssetCreate,
                      claim: IdempotencyClaim | None, body_sha256: str) -> Response:
    source_uri = check_uri_in_scope(rt.settings.raw_bucket, ctx, body.source_uri)
    asset = MediaAsset(id=new_id("ma"), tenant_id=ctx.tenant_id, env=ctx.env, user_id=actor_id,
                       kind=body.kind, source_uri=source_uri, tags=body.tags,
                       created_at=datetime.now(UTC), meta=body.meta)
    outcome = await _created(rt, claim, body_sha256, asset,
                             lambda conn: repo.insert_asset(conn, asset))
    return outcome.response()


def _asset_not_found() -> NotFound:
    return NotFound("asset not found", code="media_v2.asset_not_found")


@retry_on_disconnect
def get_asset(rt: Runtime, ctx: RequestContext, asset_id: str) -> AssetDetail:
    with rt.engine.connect() as conn:
        asset = repo.get_asset(conn, ctx.tenant_id, ctx.env, asset_id)
        if asset is None:
            raise _asset_not_found()
        return AssetDetail(asset=asset, artifacts=repo.artifacts_of(conn, asset))


@retry_on_disconnect
def list_assets(rt: Runtime, ctx: RequestContext, *, limit: int,
                before_id: str | None) -> AssetList:
    with rt.engine.connect() as conn:
        rows = repo.list_assets(conn, ctx.tenant_id, ctx.env, limit=limit + 1,
                                before_id=before_id)
    items = rows[:limit]
    return AssetList(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def register_artifact(rt: Runtime, ctx: RequestContext, asset_id: str, body: ArtifactCreate,
                      claim: IdempotencyClaim | None, body_sha256: str) -> Response:
    uri = check_uri_in_scope(rt.settings.raw_bucket, ctx, body.uri)
    if body.start_ms is not None and body.end_ms is not None and body.end_ms < body.start_ms:
        raise Unprocessable("end_ms must be >= start_ms", code="media_v2.bad_range")
    artifact = DerivedArtifact(id=new_id("mda"), parent_asset_id=asset_id,
                               tenant_id=ctx.tenant_id, env=ctx.env, kind=body.kind,
                               uri=uri, start_ms=body.start_ms, end_ms=body.end_ms,
                               track_label=body.track_label,
                               created_at=datetime.now(UTC), meta=body.meta)

    def write(conn: Connection) -> None:
        if repo.get_asset(conn, ctx.tenant_id, ctx.env, asset_id) is None:
            raise _asset_not_found()
        repo.insert_artifact(conn, artifact)

    return (await _created(rt, claim, body_sha256, artifact, write)).response()


@retry_on_disconnect
def get_artifact(rt: Runtime, ctx: RequestContext, artifact_id: str) -> DerivedArtifact:
    with rt.engine.connect() as conn:
        artifact = repo.get_artifact(conn, ctx.tenant_id, ctx.env, artifact_id)
    if artifact is None:
        raise NotFound("artifact not found", code="media_v2.artifact_not_found")
    return artifact
