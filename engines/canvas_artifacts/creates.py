"""The three canvas creates: preview, replay and audit.

Each checks the quota first (before any byte is read, from the declared size
where there is one), stores its payload in the blob store (step 1), then
commits the records through `commit.commit_and_count` (step 2, `commit.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.routing import RequestContext
from engines.auth.tokens import Caller
from engines.canvas_artifacts import quotas
from engines.canvas_artifacts.commit import Payload, commit_and_count
from engines.canvas_artifacts.models import AuditReport, RenderRef
from engines.canvas_artifacts.replay_prepare import prepare_replay, store_replay
from engines.common.ids import new_id
from engines.http.body import (
    limited_stream,
    read_limited,
    read_upload,
    request_media_type,
    require_json,
    upload_chunks,
)
from engines.http.errors import Unprocessable, first_error_message
from engines.http.jsonutil import parse_json
from engines.http.sniff import EXTENSIONS, head_checker
from engines.runtime import Runtime
from engines.storage.base import StoredBlob
from engines.storage.ingest import HeadCheck, ingest, ingest_bytes
from engines.storage.keys import canvas_key
from engines.storage.uris import check_uri_in_scope


async def _precheck_quota(rt: Runtime, caller: Caller, request: Request,
                          adds_bytes: int | None) -> None:
    await quotas.precheck(rt.engine, caller.ctx.tenant_id, caller.ctx.env, adds_bytes,
                          request.headers.get("idempotency-key"))


def _declared_preview_bytes(request: Request) -> int | None:
    """What a preview body will store, where the request says: a render-ref stores
    nothing, raw bytes their Content-Length; a multipart body is more than its file."""
    content_type = request_media_type(request)
    if content_type == "application/json":
        return 0
    if content_type == "multipart/form-data":
        return None
    return quotas.declared_size(request.headers.get("content-length"))


async def create_preview(rt: Runtime, caller: Caller, request: Request, canvas_id: str,
                         rev: int) -> Response:
    await _precheck_quota(rt, caller, request, _declared_preview_bytes(request))
    artifact_id = new_id("art")
    payload = await _preview_payload(rt, caller, request,
                                     _key_maker(caller.ctx, canvas_id, "preview", artifact_id))
    return await commit_and_count(rt, caller, request, kind="preview", canvas_id=canvas_id,
                                  rev=rev, artifact_id=artifact_id, payload=payload)


async def _preview_payload(rt: Runtime, caller: Caller, request: Request,
                           key_of: Callable[[str], str]) -> Payload:
    limit = rt.settings.max_preview_bytes
    content_type = request_media_type(request)
    if content_type == "application/json":
        raw = await read_limited(request, min(limit, 64 * 1024))
        data = parse_json(raw, max_depth=rt.settings.max_json_depth)
        try:
            ref = RenderRef.model_validate(data)
        except ValidationError as exc:
            raise Unprocessable(first_error_message(exc),
                                code="preview.invalid_render_ref") from exc
        uri = check_uri_in_scope(rt.settings.raw_bucket, caller.ctx, ref.uri)
        return Payload(uri=uri, mime_type=ref.mime_type,
                       body_sha256=hashlib.sha256(raw).hexdigest(), meta={"render_ref": True})
    if content_type == "multipart/form-data":
        async with read_upload(request, limit, code="preview.missing_file") as upload:
            return await _stored_preview(rt, upload_chunks(upload),
                                         head_checker(upload.content_type), key_of)
    return await _stored_preview(rt, limited_stream(request, limit), head_checker(content_type),
                                 key_of)


async def _stored_preview(rt: Runtime, chunks: AsyncIterator[bytes], check: HeadCheck,
                          key_of: Callable[[str], str]) -> Payload:
    blob, mime = await ingest(rt.store, chunks, limit=rt.settings.max_preview_bytes,
                              head_check=check, key_for=lambda mime: key_of(EXTENSIONS[mime]),
                              leases=rt.leases)
    return Payload(uri=blob.uri, mime_type=mime, body_sha256=blob.sha256, blob=blob)


def _key_maker(ctx: RequestContext, canvas_id: str, kind: str,
               artifact_id: str) -> Callable[[str], str]:
    def key_of(extension: str) -> str:
        return canvas_key(ctx.tenant_id, ctx.env, canvas_id, kind, artifact_id, extension)

    return key_of


def _json_key(caller: Caller, canvas_id: str, kind: str, artifact_id: str) -> str:
    return canvas_key(caller.ctx.tenant_id, caller.ctx.env, canvas_id, kind, artifact_id, "json")


async def _store_json_document(rt: Runtime, caller: Caller, canvas_id: str, kind: str,
                               artifact_id: str, raw: bytes) -> StoredBlob:
    key = _json_key(caller, canvas_id, kind, artifact_id)
    return await ingest_bytes(rt.store, key, raw, "application/json")


async def create_replay(rt: Runtime, caller: Caller, request: Request,
                        canvas_id: str) -> Response:
    require_json(request)
    await _precheck_quota(rt, caller, request, None)  # stored re-encoded: count only
    raw = await read_limited(request, rt.settings.max_replay_bytes)
    body_sha256 = hashlib.sha256(raw).hexdigest()
    prepared = await run_in_threadpool(prepare_replay, raw, rt.settings)
    del raw  # the encoded parts are what is kept from here on
    artifact_id = new_id("art")
    blob = await store_replay(rt, _json_key(caller, canvas_id, "replay", artifact_id), prepared)
    payload = Payload(uri=blob.uri, mime_type="application/json", body_sha256=body_sha256,
                      blob=blob, meta=prepared.meta, replay_index=prepared.index)
    return await commit_and_count(rt, caller, request, kind="replay", canvas_id=canvas_id,
                                  rev=prepared.doc.rev, artifact_id=artifact_id, payload=payload)


def _now() -> datetime:
    return datetime.now(UTC)


def placeholder_audit() -> dict[str, Any]:
    return {"v": 1, "kind": "render", "status": "pending", "checks": [], "findings": [],
            "summary": {"errors": 0, "warnings": 0}, "generated_at": _now().isoformat()}


async def create_audit(rt: Runtime, caller: Caller, request: Request, canvas_id: str,
                       rev: int) -> Response:
    await _precheck_quota(rt, caller, request,
                          quotas.declared_size(request.headers.get("content-length")))
    raw = await read_limited(request, rt.settings.max_audit_bytes)
    body_sha256 = hashlib.sha256(raw).hexdigest()
    if raw.strip():
        require_json(request)
        data = parse_json(raw, max_depth=rt.settings.max_json_depth)
        try:
            report = AuditReport.model_validate(data)
        except ValidationError as exc:
            raise Unprocessable(first_error_message(exc), code="audit.invalid") from exc
        document = raw
    else:
        document = orjson.dumps(placeholder_audit())
        report = AuditReport.model_validate_json(document)
    artifact_id = new_id("art")
    blob = await _store_json_document(rt, caller, canvas_id, "audit", artifact_id, document)
    meta = {"status": report.status, "errors": report.summary.errors,
            "warnings": report.summary.warnings, "placeholder": not raw.strip()}
    payload = Payload(uri=blob.uri, mime_type="application/json", body_sha256=body_sha256,
                      blob=blob, meta=meta)
    return await commit_and_count(rt, caller, request, kind="audit", canvas_id=canvas_id,
                                  rev=rev, artifact_id=artifact_id, payload=payload)
