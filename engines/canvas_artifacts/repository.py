"""SQL for canvas artifact records; every query is scoped by tenant and env."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
)

from engines.canvas_artifacts.models import ArtifactRecord
from engines.db.metadata import JsonDoc, UtcDateTime, key_order_indexes, metadata
from engines.db.writer import defer_insert

canvas_artifacts = Table(
    "canvas_artifacts", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("canvas_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("rev", BigInteger, nullable=False),
    Column("workspace_id", String(128)),
    Column("project_id", String(128), nullable=False),
    Column("surface_id", String(128)),
    Column("app_id", String(128)),
    Column("actor_id", String(256), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("uri", String(2048), nullable=False),
    Column("mime_type", String(128)),
    Column("size_bytes", BigInteger),
    Column("sha256", String(64)),
    Column("media_asset_id", String(64), nullable=False),
    Column("media_artifact_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("meta", JsonDoc, nullable=False),
    # set by a delete or an expiry: the row stays as a tombstone, readers skip it
    Column("deleted_at", UtcDateTime),
    Index("ix_canvas_artifacts_list", "tenant_id", "env", "canvas_id", "id"),
    Index("ix_canvas_artifacts_kind", "tenant_id", "env", "canvas_id", "kind", "id"),
    Index("ix_canvas_artifacts_latest", "tenant_id", "env", "canvas_id", "kind", "rev", "id"),
    Index("ix_canvas_artifacts_rev", "tenant_id", "env", "canvas_id", "rev", "id"),
    # listing across canvases (GET /artifacts), newest first, with or without a kind
    Index("ix_canvas_artifacts_scope", "tenant_id", "env", "id"),
    Index("ix_canvas_artifacts_scope_kind", "tenant_id", "env", "kind", "id"),
    *key_order_indexes("ix_canvas_artifacts_uri", "uri"),
    # retention: live artifacts of a (tenant, env, kind) by age
    Index("ix_canvas_artifacts_expiry", "tenant_id", "env", "kind", "created_at", "id",
          postgresql_where=text("deleted_at IS NULL"), sqlite_where=text("deleted_at IS NULL")),
)

replay_indexes = Table(
    "replay_indexes", metadata,
    Column("artifact_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("segments", JsonDoc, nullable=False),
    Index("ix_replay_indexes_scope", "tenant_id", "env", "artifact_id"),
)

_RECORD_COLUMNS = [canvas_artifacts.c[name] for name in ArtifactRecord.model_fields]


_INSERT_RECORD = insert(canvas_artifacts)  # built once: it runs in every create
_INSERT_REPLAY_INDEX = insert(replay_indexes)


def insert_record(conn: Connection, record: ArtifactRecord) -> None:
    """In a group-commit batch, with the batch's other records (engines/db/writer.py)."""
    defer_insert(conn, _INSERT_RECORD, record.model_dump())


def insert_replay_index(conn: Connection, record: ArtifactRecord, index: dict[str, object]) -> None:
    defer_insert(conn, _INSERT_REPLAY_INDEX, {"artifact_id": record.id,
                                              "tenant_id": record.tenant_id,
                                              "env": record.env, "segments": index})


def get_replay_index(conn: Connection, record: ArtifactRecord) -> dict[str, Any] | None:
    return replay_index(conn, record.tenant_id, record.env, record.id)


def replay_index(conn: Connection, tenant_id: str, env: str,
                 artifact_id: str) -> dict[str, Any] | None:
    t = replay_indexes.c
    return conn.execute(select(t.segments).where(
        t.artifact_id == artifact_id, t.tenant_id == tenant_id, t.env == env,
    )).scalar_one_or_none()


def _record(row: Mapping[str, Any]) -> ArtifactRecord:
    """A row we wrote ourselves, validated on the way in: no second validation on the way out."""
    return ArtifactRecord.model_construct(**row)


_c = canvas_artifacts.c
_LIVE = select(*_RECORD_COLUMNS).where(
    _c.tenant_id == bindparam("tenant_id"), _c.env == bindparam("env"), _c.deleted_at.is_(None))
"""Records of the caller's tenant/env that are not deleted: every read starts here."""
_IN_CANVAS = _LIVE.where(_c.canvas_id == bindparam("canvas_id"))
# built once: the two lookups every content GET and `latest` make
_GET_RECORD = _IN_CANVAS.where(_c.id == bindparam("artifact_id"))
_LATEST_RECORD = _IN_CANVAS.where(_c.kind == bindparam("kind")).order_by(
    _c.rev.desc(), _c.id.desc()).limit(1)


def get_record(conn: Connection, tenant_id: str, env: str, canvas_id: str,
               artifact_id: str) -> ArtifactRecord | None:
    row = conn.execute(_GET_RECORD, {"tenant_id": tenant_id, "env": env, "canvas_id": canvas_id,
                                     "artifact_id": artifact_id}).mappings().first()
    return _record(row) if row else None


def lock_live_record(conn: Connection, record: ArtifactRecord) -> bool:
    """True if the record is still live, holding a share lock on its row (PostgreSQL) until
    the transaction ends: a concurrent delete then waits for this one, and sees its writes."""
    return conn.execute(select(_c.id).where(
        _c.id == record.id, _c.tenant_id == record.tenant_id, _c.env == record.env,
        _c.deleted_at.is_(None)).with_for_update(read=True)).first() is not None


def list_records(conn: Connection, tenant_id: str, env: str, canvas_id: str | None, *,
                 kind: str | None, rev: int | None, before_id: str | None, limit: int,
                 created_after: datetime | None = None,
                 created_before: datetime | None = None) -> list[ArtifactRecord]:
    """Live records newest first: of one canvas, or (canvas_id None) of the whole
    tenant/env; every filter narrows an index that starts with (tenant_id, env)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "env": env}
    query = _LIVE
    if canvas_id is not None:
        query, params["canvas_id"] = _IN_CANVAS, canvas_id
    if kind is not None:
        query = query.where(_c.kind == kind)
    if rev is not None:
        query = query.where(_c.rev == rev)
    if created_after is not None:
        query = query.where(_c.created_at > created_after)
    if created_before is not None:
        query = query.where(_c.created_at < created_before)
    if before_id is not None:
        query = query.where(_c.id < before_id)
    rows = conn.execute(query.order_by(_c.id.desc()).limit(limit), params).mappings()
    return [_record(r) for r in rows]


def canvas_ids(conn: Connection, tenant_id: str, env: str, *, after: str | None,
               limit: int) -> list[str]:
    """Canvas ids with a live artifact in the tenant/env, in id order, after a key."""
    query = select(_c.canvas_id).distinct().where(
        _c.tenant_id == tenant_id, _c.env == env, _c.deleted_at.is_(None))
    if after is not None:
        query = query.where(_c.canvas_id > after)
    return list(conn.execute(query.order_by(_c.canvas_id).limit(limit)).scalars())


def canvas_kinds(conn: Connection, tenant_id: str, env: str,
                 canvases: list[str]) -> list[tuple[str, str, int, str]]:
    """(canvas_id, kind, live count, latest id) per kind present on each canvas; latest
    as `latest_record` has it: highest rev, then newest."""
    if not canvases:
        return []
    window = {"partition_by": (_c.canvas_id, _c.kind)}
    ranked = select(
        _c.canvas_id, _c.kind, _c.id, func.count().over(**window).label("count"),
        func.row_number().over(**window, order_by=(_c.rev.desc(), _c.id.desc())).label("rank"),
    ).where(_c.tenant_id == tenant_id, _c.env == env, _c.deleted_at.is_(None),
            _c.canvas_id.in_(canvases)).subquery()
    rows = conn.execute(select(ranked.c.canvas_id, ranked.c.kind, ranked.c["count"],
                               ranked.c.id).where(ranked.c.rank == 1))
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def latest_record(conn: Connection, tenant_id: str, env: str, canvas_id: str,
                  kind: str) -> ArtifactRecord | None:
    row = conn.execute(_LATEST_RECORD, {"tenant_id": tenant_id, "env": env,
                                        "canvas_id": canvas_id, "kind": kind}).mappings().first()
    return _record(row) if row else None


def records_by_id(conn: Connection, tenant_id: str, env: str,
                  ids: list[str]) -> list[ArtifactRecord]:
    if not ids:
        return []
    rows = conn.execute(_LIVE.where(_c.id.in_(ids)).order_by(_c.id),
                        {"tenant_id": tenant_id, "env": env}).mappings()
    return [_record(r) for r in rows]


def records_after(conn: Connection, tenant_id: str, env: str, canvas_id: str, *,
                  kind: str | None, after_id: str, limit: int) -> list[ArtifactRecord]:
    """Live records of a canvas in id order, after a key: how exports page through 100k."""
    query = _IN_CANVAS.where(_c.id > after_id)
    if kind is not None:
        query = query.where(_c.kind == kind)
    rows = conn.execute(query.order_by(_c.id).limit(limit),
                        {"tenant_id": tenant_id, "env": env, "canvas_id": canvas_id}).mappings()
    return [_record(r) for r in rows]
