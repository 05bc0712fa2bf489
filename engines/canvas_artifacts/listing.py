"""Listing across canvases: every artifact of a tenant/env, and the canvases it has.

An app should not have to keep its own list of canvas ids. Both lists read
only live artifacts of the caller's (tenant, env), through indexes that start
with (tenant_id, env), and page with the same opaque cursor as a canvas's own
list.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from engines.auth.routing import RequestContext
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.cursors import cut_page, decode_cursor
from engines.canvas_artifacts.models import ArtifactKindName, ArtifactList
from engines.db.engine import retry_on_disconnect
from engines.http.errors import Unprocessable
from engines.runtime import Runtime

KINDS: tuple[ArtifactKindName, ...] = ("preview", "replay", "audit")


class CanvasSummary(BaseModel):
    """One canvas: how many live artifacts of each kind, and each kind's latest id
    (highest rev, then newest: what `/latest?kind=` answers); null for none."""

    canvas_id: str
    artifact_count: int
    counts: dict[ArtifactKindName, int] = Field(
        description="live artifacts per kind (every kind listed, 0 when none)")
    latest: dict[ArtifactKindName, str | None] = Field(
        description="id of each kind's latest artifact (null when none)")


class CanvasList(BaseModel):
    items: list[CanvasSummary]
    next_cursor: str | None = None


def _utc(value: datetime | None) -> datetime | None:
    """A time without an offset is read as UTC, as every stored time is."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@retry_on_disconnect
def list_artifacts(rt: Runtime, ctx: RequestContext, *, kind: str | None,
                   canvas_id: str | None, created_after: datetime | None,
                   created_before: datetime | None, limit: int,
                   cursor: str | None) -> ArtifactList:
    """The tenant/env's live artifacts newest first; created_* bounds are exclusive."""
    after, before = _utc(created_after), _utc(created_before)
    if after is not None and before is not None and after >= before:
        raise Unprocessable("created_after must be earlier than created_before",
                            code="request.invalid")
    with rt.engine.connect() as conn:
        rows = repo.list_records(conn, ctx.tenant_id, ctx.env, canvas_id, kind=kind, rev=None,
                                 before_id=decode_cursor(cursor), limit=limit + 1,
                                 created_after=after, created_before=before)
    items, next_cursor = cut_page(rows, limit, lambda record: record.id)
    return ArtifactList(items=items, next_cursor=next_cursor)


@retry_on_disconnect
def list_canvases(rt: Runtime, ctx: RequestContext, *, limit: int,
                  cursor: str | None) -> CanvasList:
    """Canvases with a live artifact, in canvas id order."""
    with rt.engine.connect() as conn:
        ids = repo.canvas_ids(conn, ctx.tenant_id, ctx.env, after=decode_cursor(cursor),
                              limit=limit + 1)
        page, next_cursor = cut_page(ids, limit, lambda canvas_id: canvas_id)
        kinds = repo.canvas_kinds(conn, ctx.tenant_id, ctx.env, page)
    summaries = {canvas_id: CanvasSummary(canvas_id=canvas_id, artifact_count=0,
                                          counts=dict.fromkeys(KINDS, 0),
                                          latest=dict.fromkeys(KINDS))
                 for canvas_id in page}
    for canvas_id, kind, count, latest_id in kinds:
        summary = summaries[canvas_id]
        summary.counts[kind] = count
        summary.latest[kind] = latest_id
        summary.artifact_count += count
    return CanvasList(items=list(summaries.values()), next_cursor=next_cursor)
