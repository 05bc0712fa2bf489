"""Variant records: media_v2 DerivedArtifacts of kind `canvas_preview_variant`.

Read by id (through the process's cache, `rt.variants`), inserted if absent
while the source is live (two first renders insert one record), listed and
tombstoned with their source artifact.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import Connection

from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.variants.ids import variant_id_prefix
from engines.db.engine import retry_on_disconnect
from engines.db.writer import CommitOutcomeUnknown, write_transaction
from engines.http.errors import NotFound, ServiceUnavailable
from engines.media_v2 import repository as media_repo
from engines.media_v2.models import DerivedArtifact
from engines.runtime import Runtime

VARIANT_KIND = "canvas_preview_variant"


def variants_of(conn: Connection, tenant_id: str, env: str,
                artifact_id: str) -> list[DerivedArtifact]:
    """Every live stored variant of one artifact, for DELETE to remove with it."""
    found = media_repo.artifacts_with_id_prefix(
        conn, tenant_id, env, VARIANT_KIND, variant_id_prefix(tenant_id, env, artifact_id))
    return [a for a in found if a.meta.get("source_artifact_id") == artifact_id]


def _remember(rt: Runtime, variant: DerivedArtifact, read_started: float) -> DerivedArtifact:
    """Cache a stored variant (`rt.variants`): it never changes, and it is dropped with its
    source artifact. It is reached only after the artifact's own record was read, and a
    cached one whose blob is missing sends the request back to the database
    (`content_dispatch.content`), so a hit only ever saves the second read of a thumbnail GET."""
    rt.variants.put(variant.id, variant, read_started, scope=(variant.tenant_id, variant.env),
                    subject=variant.meta.get("source_artifact_id"))
    return variant


@retry_on_disconnect
def find_variant(rt: Runtime, tenant_id: str, env: str,
                 variant_id: str) -> DerivedArtifact | None:
    started = rt.variants.now()
    with rt.engine.connect() as conn:
        found = media_repo.get_artifact(conn, tenant_id, env, variant_id)
    return _remember(rt, found, started) if found is not None else None


@retry_on_disconnect
def record_variant(rt: Runtime, record: ArtifactRecord,
                   derived: DerivedArtifact) -> DerivedArtifact:
    """Insert if absent and return whichever record won (ours or a concurrent twin's).

    Only while the source is live: a delete that ran during the render makes
    this a 404 rather than a variant nothing would ever remove. A COMMIT
    whose outcome is unknown is resolved by the read that follows.
    """
    started = rt.variants.now()
    with contextlib.suppress(CommitOutcomeUnknown), write_transaction(rt.engine) as conn:
        if not repo.lock_live_record(conn, record):
            raise NotFound("artifact not found", code="canvas.not_found")
        media_repo.insert_artifact(conn, derived, if_absent=True)
    with rt.engine.connect() as conn:
        winner = media_repo.get_artifact(conn, derived.tenant_id, derived.env, derived.id)
    if winner is None:
        raise ServiceUnavailable("the variant could not be recorded; retry",
                                 code="metadata.write_failed")
    return _remember(rt, winner, started)


def tombstone_variants(conn: Connection, tenant_id: str, env: str, artifact_ids: list[str],
                       now: datetime) -> list[str]:
    """Mark deleted artifacts' variants deleted, on the delete's transaction, with one
    lookup for them all; returns their URIs, whose blobs the delete removes once it has
    committed."""
    deleted = set(artifact_ids)
    found = [a for a in media_repo.artifacts_with_id_prefix(
        conn, tenant_id, env, VARIANT_KIND,
        *(variant_id_prefix(tenant_id, env, artifact_id) for artifact_id in artifact_ids))
        if a.meta.get("source_artifact_id") in deleted]
    media_repo.mark_artifacts_deleted(conn, tenant_id, env, [v.id for v in found], now)
    return [v.uri for v in found]
