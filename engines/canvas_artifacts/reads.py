"""Reads of a canvas's artifacts: one record, the list, the latest, the lineage.

Every read is scoped to the caller's tenant and env, so an id of someone else
answers 404 exactly like one that does not exist. One record comes from the
process's record cache when it holds it (`record_cache.py`); `confirm_live`
asks the database when what a cached record points at turns out missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from engines.auth.routing import RequestContext
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.cursors import cut_page, decode_cursor
from engines.canvas_artifacts.models import ArtifactList, ArtifactRecord, Lineage
from engines.canvas_artifacts.record_cache import remember
from engines.db.engine import retry_on_disconnect
from engines.http.errors import NotFound
from engines.runtime import Runtime


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


@retry_on_disconnect
def list_artifacts(rt: Runtime, ctx: RequestContext, canvas_id: str, *, kind: str | None,
                   rev: int | None, limit: int, cursor: str | None) -> ArtifactList:
    before = decode_cursor(cursor)
    with rt.engine.connect() as conn:
        rows = repo.list_records(conn, ctx.tenant_id, ctx.env, canvas_id, kind=kind, rev=rev,
                                 before_id=before, limit=limit + 1)
    items, next_cursor = cut_page(rows, limit, lambda record: record.id)
    return ArtifactList(items=items, next_cursor=next_cursor)


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
