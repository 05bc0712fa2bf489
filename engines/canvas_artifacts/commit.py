"""Step (2) of every canvas create: the artifact's records, through the create protocol.

Create = (1) stream or store the payload under its key, hashing as it goes
(`creates.py`, `replay_prepare.py`, `uploads.py`); (2) one transaction writing
the canvas's media_v2 asset (first use), the media_v2 DerivedArtifact, the
artifact record, the NexusDocument and the DatasetEvent, plus the idempotency
key (here). If (2) fails the blob is deleted, so no trace of the artifact
remains; a crash between (1) and (2) leaves only an orphan blob, which
`engines gc` removes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from engines.auth.tokens import Caller
from engines.canvas_artifacts import quotas
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.record_cache import remember
from engines.common.ids import new_id
from engines.create import Created, Replayed, create_stored
from engines.db import idempotency
from engines.db.metadata import row_exists
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.schemas import NexusDocument, NexusKind
from engines.media_v2 import repository as media_repo
from engines.media_v2.models import DerivedArtifact
from engines.media_v2.service import ensure_canvas_asset
from engines.observability import metrics
from engines.runtime import Runtime
from engines.storage.base import StoredBlob

log = logging.getLogger("engines.canvas_artifacts")


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
        if with_asset:
            ensure_canvas_asset(conn, record.tenant_id, record.env, record.canvas_id,
                                record.actor_id, record.media_asset_id, record.created_at)
        media_repo.insert_artifact(conn, derived)
        repo.insert_record(conn, record)
        if replay_index is not None:
            repo.insert_replay_index(conn, record, replay_index)
        # The scope's two hot rows last, so concurrent creates of a tenant wait on them
        # for the fewest statements (PostgreSQL holds a row lock until COMMIT), and in
        # the order deletes take them (usage, then the event counter): no deadlock.
        quotas.count_created(conn, record)
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


async def commit_and_count(rt: Runtime, caller: Caller, request: Request, *, kind: str,
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
