"""Canvas artifact orchestration: payload to blob store, then one metadata step.

Create = (1) stream or store the payload under its key, hashing as it goes;
(2) one transaction writing the canvas's media_v2 asset (first use), the
media_v2 DerivedArtifact, the artifact record, the NexusDocument and the
DatasetEvent, plus the idempotency key. If (2) fails the blob is deleted, so
no trace of the artifact remains; a crash between (1) and (2) leaves only an
orphan blob, which `engines gc` removes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.routing import RequestContext
from engines.auth.tokens import Caller
from engines.canvas_artifacts import quotas, variants
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.content import presign_ttl, serve_blob, serve_render_ref
from engines.canvas_artifacts.models import (
    ArtifactList,
    ArtifactRecord,
    AuditReport,
    Lineage,
    RenderRef,
    ReplayDocument,
)
from engines.canvas_artifacts.record_cache import remember
from engines.canvas_artifacts.replay import read_window
from engines.canvas_artifacts.replay_ingest import (
    ENVELOPE_MAX_BYTES,
    ReplayError,
    ReplayLimits,
    parse_replay,
)
from engines.canvas_artifacts.replay_store import compress, json_reader
from engines.common.ids import new_id
from engines.config import Settings
from engines.create import Created, Replayed, create_stored
from engines.db import idempotency
from engines.db.engine import retry_on_disconnect
from engines.db.metadata import row_exists
from engines.http.body import (
    UPLOAD_CHUNK,
    limited_stream,
    read_limited,
    read_upload,
    request_media_type,
    require_json,
    upload_chunks,
)
from engines.http.errors import (
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    first_error_message,
)
from engines.http.jsonutil import parse_json
from engines.http.params import is_safe_id
from engines.http.sniff import EXTENSIONS, head_checker
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.schemas import NexusDocument, NexusKind
from engines.media_v2 import repository as media_repo
from engines.media_v2.models import DerivedArtifact
from engines.media_v2.service import ensure_canvas_asset
from engines.observability import metrics
from engines.runtime import Runtime
from engines.storage.base import BlobNotFound, StoredBlob
from engines.storage.ingest import HeadCheck, ingest, ingest_bytes
from engines.storage.keys import canvas_key
from engines.storage.uris import check_uri_in_scope

log = logging.getLogger("engines.canvas_artifacts")

T = TypeVar("T")
MEDIA_KIND = {"preview": "canvas_preview", "replay": "canvas_replay", "audit": "canvas_audit"}


@dataclass
class Payload:
    """What step (1) produced: where the bytes are and what they are."""

    uri: str
    mime_type: str | None
    body_sha256: str
    blob: StoredBlob | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    replay_index: dict[str, Any] | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def record_lineage(record: ArtifactRecord) -> dict[str, Any]:
    """The lineage Nexus keeps of an artifact: its routing keys, ids and payload facts."""
    return {
        "tenant_id": record.tenant_id, "env": record.env, "workspace_id": record.workspace_id,
        "project_id": record.project_id, "surface_id": record.surface_id,
        "app_id": record.app_id, "canvas_id": record.canvas_id, "rev": record.rev,
        "correlation_id": record.correlation_id, "request_id": record.request_id,
        "actor_id": record.actor_id, "artifact_id": record.id, "uri": record.uri,
        "kind": record.kind, "mime_type": record.mime_type, "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "media_asset_id": record.media_asset_id, "media_artifact_id": record.media_artifact_id,
        "created_at": record.created_at.isoformat(), "recorded_at": _now().isoformat(),
    }


def metadata_writer(rt: Runtime, record: ArtifactRecord, replay_index: dict[str, Any] | None,
                    *, mode: str | None = None, with_asset: bool = True, how: str = "created",
                    provenance: dict[str, Any] | None = None) -> Callable[[Connection], None]:
    """Step (2): every record of the artifact, written on the caller's transaction
    (the canvas asset's insert-if-absent only `with_asset`); `mode` is the caller's X-Mode.

    `how` ends the event type (`canvas.preview.created`, `.imported`) and
    `provenance` is added to the lineage: where an imported artifact came from.
    """
    lineage = {**record_lineage(record), "mode": mode, **(provenance or {})}
    document = NexusDocument(id=new_id("nxd"), tenant_id=record.tenant_id, env=record.env,
                             kind=NexusKind(MEDIA_KIND[record.kind]), subject_id=record.id,
                             lineage=lineage, created_at=record.created_at)
    event = DatasetEvent(id=new_id("dse"), tenant_id=record.tenant_id, env=record.env,
                         event_type=f"canvas.{record.kind}.{how}", subject_id=record.id,
                         document_id=document.id, lineage=lineage, created_at=record.created_at)
    derived = DerivedArtifact(
        id=record.media_artifact_id, parent_asset_id=record.media_asset_id,
        tenant_id=record.tenant_id, env=record.env, kind=MEDIA_KIND[record.kind], uri=record.uri,
        created_at=record.created_at,
        meta={"canvas_id": record.canvas_id, "rev": record.rev, "artifact_id": record.id,
              "mime_type": record.mime_type, "sha256": record.sha256,
              "size_bytes": record.size_bytes})

    def write(conn: Connection) -> None:
        quotas.count_created(conn, record)
        if with_asset:
            ensure_canvas_asset(conn, record.tenant_id, record.env, record.canvas_id,
                                record.actor_id, record.media_asset_id, record.created_at)
        media_repo.insert_artifact(conn, derived)
        repo.insert_record(conn, record)
        if replay_index is not None:
            repo.insert_replay_index(conn, record, replay_index)
        rt.nexus.record(conn, document, event)

    return write


async def _commit(rt: Runtime, caller: Caller, request: Request, *, kind: str, canvas_id: str,
                  rev: int, artifact_id: str, payload: Payload,
                  claim: idempotency.IdempotencyClaim | None = None
                  ) -> Created[ArtifactRecord] | Replayed:
    """Step (2) through the create protocol (`engines/create.py`); `claim` replaces the
    request's Idempotency-Key (an upload session's completion is claimed by the session's
    id)."""
    ctx = caller.ctx
    claim = claim or idempotency.claim_from(request, ctx, caller.auth.actor_id)
    blob = payload.blob
    record = ArtifactRecord(
        id=artifact_id, kind=kind, canvas_id=canvas_id, rev=rev, tenant_id=ctx.tenant_id,
        env=ctx.env, workspace_id=ctx.workspace_id, project_id=ctx.project_id,
        surface_id=ctx.surface_id, app_id=ctx.app_id, actor_id=caller.auth.actor_id,
        correlation_id=ctx.correlation_id, request_id=ctx.request_id, uri=payload.uri,
        mime_type=payload.mime_type, size_bytes=blob.size if blob else None,
        sha256=blob.sha256 if blob else None,
        media_asset_id=canvas_asset_id(ctx.tenant_id, ctx.env, canvas_id),
        media_artifact_id=new_id("mda"), created_at=_now(), meta=payload.meta)
    started = rt.records.now()
    outcome = await _write_metadata(rt, claim, payload, record, ctx.mode)
    if isinstance(outcome, Created):
        # after a commit the canvas asset exists until a purge erases it (assets are never
        # deleted otherwise), so later creates on this canvas skip its insert
        rt.assets.put(record.media_asset_id, True, started,
                      scope=(record.tenant_id, record.env))
        remember(rt.records, record, started)
    return outcome


async def _write_metadata(rt: Runtime, claim: idempotency.IdempotencyClaim | None,
                          payload: Payload, record: ArtifactRecord,
                          mode: str | None) -> Created[ArtifactRecord] | Replayed:
    """Step (2) in one transaction with the idempotency claim (`create_stored`).

    The canvas asset's insert is skipped while this process knows the asset is
    committed. That knowledge may be stale (a purge erased the asset since):
    the artifact's insert then fails on its foreign key, and the entry is
    dropped and the transaction run once more with the asset's insert. A cache
    entry may save a statement; it never makes a write fail.
    """
    known = rt.assets.get(record.media_asset_id) is not None

    def writer(with_asset: bool) -> idempotency.Writer:
        return metadata_writer(rt, record, payload.replay_index, mode=mode,
                               with_asset=with_asset)

    def again(exc: IntegrityError) -> idempotency.Writer:
        if not known:
            raise exc
        log.info("canvas asset %s is gone (purged?); writing it again", record.media_asset_id)
        rt.assets.discard(record.media_asset_id)
        return writer(True)

    return await create_stored(
        rt, record, orjson.dumps(record.model_dump(mode="json")), writer(not known),
        lambda conn: row_exists(conn, repo.canvas_artifacts, record.id), record_id=record.id,
        blob=payload.blob, claim=claim, body_sha256=payload.body_sha256, again=again)


async def _counted(rt: Runtime, caller: Caller, request: Request, *, kind: str,
                   **commit: Any) -> Response:
    """`_commit`, then the created-artifact metrics (an idempotent replay created nothing)."""
    outcome = await _commit(rt, caller, request, kind=kind, **commit)
    if isinstance(outcome, Created):
        blob = commit["payload"].blob
        metrics.record_created(kind, blob.size if blob else 0, tenant=caller.ctx.tenant_id,
                               env=caller.ctx.env)
    return outcome.response()


def canvas_asset_id(tenant_id: str, env: str, canvas_id: str) -> str:
    """The canvas's media_v2 asset id, derived so first use needs no lookup."""
    digest = hashlib.sha256(f"{tenant_id}\x00{env}\x00{canvas_id}".encode()).hexdigest()
    return f"mca_{digest[:32]}"


# ---- previews -------------------------------------------------------------


async def _preview_payload(rt: Runtime, caller: Caller, request: Request, key_of) -> Payload:
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
                          key_of) -> Payload:
    blob, mime = await ingest(rt.store, chunks, limit=rt.settings.max_preview_bytes,
                              head_check=check, key_for=lambda mime: key_of(EXTENSIONS[mime]),
                              leases=rt.leases)
    return Payload(uri=blob.uri, mime_type=mime, body_sha256=blob.sha256, blob=blob)


def _key_maker(ctx: RequestContext, canvas_id: str, kind: str, artifact_id: str):
    def key_of(extension: str) -> str:
        return canvas_key(ctx.tenant_id, ctx.env, canvas_id, kind, artifact_id, extension)

    return key_of


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
    return await _counted(rt, caller, request, kind="preview", canvas_id=canvas_id, rev=rev,
                         artifact_id=artifact_id, payload=payload)


def _json_key(caller: Caller, canvas_id: str, kind: str, artifact_id: str) -> str:
    return canvas_key(caller.ctx.tenant_id, caller.ctx.env, canvas_id, kind, artifact_id, "json")


async def _store_json_document(rt: Runtime, caller: Caller, canvas_id: str, kind: str,
                               artifact_id: str, raw: bytes) -> StoredBlob:
    key = _json_key(caller, canvas_id, kind, artifact_id)
    return await ingest_bytes(rt.store, key, raw, "application/json")


@dataclass
class PreparedReplay:
    doc: ReplayDocument
    frames: list[bytes]
    """The blob: one zstd frame per segment (replay_store)."""
    index: dict[str, Any]
    meta: dict[str, Any]
    json_size: int
    json_sha256: str


def prepare_replay(raw: bytes, settings: Settings) -> PreparedReplay:
    """Parse, validate and segment a replay body (CPU-heavy: run it off the event loop).

    The body is walked one keyframe at a time (`replay_ingest`), so memory stays
    near the body's size whatever its shape; the envelope then goes through the
    pydantic model.
    """
    limits = ReplayLimits(max_keyframes=settings.max_keyframes,
                          max_keyframe_bytes=settings.max_keyframe_bytes,
                          max_depth=settings.max_json_depth)
    try:
        parsed = parse_replay(raw, limits)
        doc = ReplayDocument.model_validate({**parsed.envelope, "keyframes": []})
        parsed.check_revs(doc.rev)
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="replay.invalid") from exc
    except ReplayError as exc:
        raise Unprocessable(str(exc), code=exc.code) from exc
    stored = compress(*parsed.encoded())
    return PreparedReplay(doc=doc, frames=stored.frames, index=stored.index,
                          meta=parsed.meta(doc.rev_from, doc.mode), json_size=stored.json_size,
                          json_sha256=stored.json_sha256)


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    """The stored replay in upload-sized pieces: never joined into one more copy."""
    for part in parts:
        for start in range(0, len(part), UPLOAD_CHUNK):
            yield part[start:start + UPLOAD_CHUNK]


async def store_replay(rt: Runtime, key: str, prepared: PreparedReplay) -> StoredBlob:
    """Write a prepared replay's frames; the blob as the record describes it: the JSON a
    client gets back (its size and sha256), not the frames it is stored as."""
    size = sum(len(frame) for frame in prepared.frames)
    stored, _ = await ingest(rt.store, _chunks(prepared.frames), limit=size,
                             head_check=lambda _head: "application/json",
                             key_for=lambda _mime: key, leases=rt.leases)
    return replace(stored, size=prepared.json_size, sha256=prepared.json_sha256)


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
    return await _counted(rt, caller, request, kind="replay", canvas_id=canvas_id,
                         rev=prepared.doc.rev, artifact_id=artifact_id, payload=payload)


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
    return await _counted(rt, caller, request, kind="audit", canvas_id=canvas_id, rev=rev,
                         artifact_id=artifact_id, payload=payload)


# ---- reads ----------------------------------------------------------------


def _not_found() -> NotFound:
    return NotFound("artifact not found", code="canvas.not_found")


@retry_on_disconnect
def get_artifact(rt: Runtime, ctx: RequestContext, canvas_id: str,
                 artifact_id: str) -> ArtifactRecord:
    """A live record of the caller's tenant/env, from the record cache or the database."""
    cached = rt.records.get((ctx.tenant_id, ctx.env, canvas_id, artifact_id))
    if cached is not None:
        return cached
    started = rt.records.now()
    with rt.engine.connect() as conn:
        record = repo.get_record(conn, ctx.tenant_id, ctx.env, canvas_id, artifact_id)
    if record is None:
        raise _not_found()
    remember(rt.records, record, started)
    return record


async def find_artifact(rt: Runtime, ctx: RequestContext, canvas_id: str,
                        artifact_id: str) -> ArtifactRecord:
    """`get_artifact` from the event loop: a cached record costs no thread hop."""
    cached = rt.records.get((ctx.tenant_id, ctx.env, canvas_id, artifact_id))
    if cached is not None:
        return cached
    return await run_in_threadpool(get_artifact, rt, ctx, canvas_id, artifact_id)


@retry_on_disconnect
def _is_live(rt: Runtime, record: ArtifactRecord) -> bool:
    with rt.engine.connect() as conn:
        return repo.get_record(conn, record.tenant_id, record.env, record.canvas_id,
                               record.id) is not None


async def confirm_live(rt: Runtime, record: ArtifactRecord) -> None:
    """Something the record points at is missing (its blob, its replay index): the record
    may be a stale copy of a deleted artifact. Drop what this process holds of it and ask
    the database; 404 if the artifact is gone, as a fresh read would answer."""
    rt.caches.drop((record.tenant_id, record.env), record.id)
    if not await run_in_threadpool(_is_live, rt, record):
        raise _not_found()


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Unprocessable("cursor is not valid", code="request.bad_cursor") from exc
    # only ids we minted are cursors: anything else (a NUL, control characters, text)
    # would reach the database, where PostgreSQL refuses what SQLite compares
    if not is_safe_id(value):
        raise Unprocessable("cursor is not valid", code="request.bad_cursor")
    return value


@retry_on_disconnect
def list_artifacts(rt: Runtime, ctx: RequestContext, canvas_id: str, *, kind: str | None,
                   rev: int | None, limit: int, cursor: str | None) -> ArtifactList:
    before = decode_cursor(cursor)
    with rt.engine.connect() as conn:
        rows = repo.list_records(conn, ctx.tenant_id, ctx.env, canvas_id, kind=kind, rev=rev,
                                 before_id=before, limit=limit + 1)
    items, next_cursor = cut_page(rows, limit, lambda record: record.id)
    return ArtifactList(items=items, next_cursor=next_cursor)


def cut_page(rows: list[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Rows read with `limit + 1`: the page, and the cursor of the next one (None: last)."""
    items = rows[:limit]
    return items, encode_cursor(key(items[-1])) if len(rows) > limit else None


@retry_on_disconnect
def latest_artifact(rt: Runtime, ctx: RequestContext, canvas_id: str,
                    kind: str) -> ArtifactRecord:
    with rt.engine.connect() as conn:
        record = repo.latest_record(conn, ctx.tenant_id, ctx.env, canvas_id, kind)
    if record is None:
        raise _not_found()
    return record


def read_lineages(conn: Connection, rt: Runtime, tenant_id: str, env: str,
                  records: Sequence[ArtifactRecord]) -> list[Lineage]:
    """The Nexus documents and dataset events of (live) artifacts of one tenant/env, read
    in one query however many there are (an export reads a page at once)."""
    found = rt.nexus.lineage_of(conn, tenant_id, env, [record.id for record in records])
    return [Lineage(artifact_id=record.id, documents=found[record.id].documents,
                    events=found[record.id].events) for record in records]


@retry_on_disconnect
def lineage(rt: Runtime, ctx: RequestContext, canvas_id: str, artifact_id: str) -> Lineage:
    with rt.engine.connect() as conn:
        record = repo.get_record(conn, ctx.tenant_id, ctx.env, canvas_id, artifact_id)
        if record is None:
            raise _not_found()
        (found,) = read_lineages(conn, rt, ctx.tenant_id, ctx.env, [record])
        return found


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
                  variant: variants.VariantQuery | None = None) -> Response:
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
                   variant: variants.VariantQuery | None) -> Response:
    if variant is not None:
        return await variants.serve_variant(rt, request, record, variant, inline=inline)
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
