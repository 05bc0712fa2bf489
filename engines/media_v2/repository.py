"""SQL for media_v2: assets and derived artifacts, always scoped by tenant/env."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    String,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)

from engines.db.metadata import JsonDoc, UtcDateTime, key_order_indexes, metadata
from engines.db.upsert import insert_ignore
from engines.db.writer import defer_insert
from engines.media_v2.models import DerivedArtifact, MediaAsset

assets = Table(
    "media_v2_assets", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("user_id", String(128)),
    Column("kind", String(16), nullable=False),
    Column("source_uri", String(2048), nullable=False),
    Column("size_bytes", BigInteger),
    Column("tags", JsonDoc, nullable=False),
    Column("source_ref", String(256)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("meta", JsonDoc, nullable=False),
    Index("ix_media_v2_assets_scope", "tenant_id", "env", "id"),
    *key_order_indexes("ix_media_v2_assets_source_uri", "source_uri"),
)

artifacts = Table(
    "media_v2_artifacts", metadata,
    Column("id", String(64), primary_key=True),
    Column("parent_asset_id", String(64), ForeignKey("media_v2_assets.id"), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("uri", String(2048), nullable=False),
    Column("start_ms", BigInteger),
    Column("end_ms", BigInteger),
    Column("track_label", String(128)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("meta", JsonDoc, nullable=False),
    Column("deleted_at", UtcDateTime),
    Index("ix_media_v2_artifacts_parent", "parent_asset_id", "id"),
    *key_order_indexes("ix_media_v2_artifacts_uri", "uri"),
    Index("ix_media_v2_artifacts_scope", "tenant_id", "env", "id"),
)


def insert_asset(conn: Connection, asset: MediaAsset, *, if_absent: bool = False) -> None:
    values = asset.model_dump()
    conn.execute(insert_ignore(conn, assets) if if_absent else insert(assets), values)


_INSERT_ARTIFACT = insert(artifacts)  # built once: it runs in every create


def insert_artifact(conn: Connection, artifact: DerivedArtifact, *,
                    if_absent: bool = False) -> None:
    """In a group-commit batch, with the batch's other artifacts (engines/db/writer.py)."""
    values = artifact.model_dump()
    if if_absent:
        conn.execute(insert_ignore(conn, artifacts), values)
    else:
        defer_insert(conn, _INSERT_ARTIFACT, values)


def get_asset(conn: Connection, tenant_id: str, env: str, asset_id: str) -> MediaAsset | None:
    row = conn.execute(select(assets).where(and_(
        assets.c.id == asset_id, assets.c.tenant_id == tenant_id, assets.c.env == env,
    ))).mappings().first()
    return MediaAsset.model_validate(dict(row)) if row else None


def list_assets(conn: Connection, tenant_id: str, env: str, *, limit: int,
                before_id: str | None) -> list[MediaAsset]:
    query = select(assets).where(assets.c.tenant_id == tenant_id, assets.c.env == env)
    if before_id:
        query = query.where(assets.c.id < before_id)
    rows = conn.execute(query.order_by(assets.c.id.desc()).limit(limit)).mappings()
    return [MediaAsset.model_validate(dict(r)) for r in rows]


def get_artifact(conn: Connection, tenant_id: str, env: str,
                 artifact_id: str) -> DerivedArtifact | None:
    row = conn.execute(select(artifacts).where(and_(
        artifacts.c.id == artifact_id, artifacts.c.tenant_id == tenant_id,
        artifacts.c.env == env, artifacts.c.deleted_at.is_(None),
    ))).mappings().first()
    return DerivedArtifact.model_validate(dict(row)) if row else None


def artifacts_of(conn: Connection, asset: MediaAsset) -> list[DerivedArtifact]:
    rows = conn.execute(select(artifacts).where(
        artifacts.c.parent_asset_id == asset.id, artifacts.c.tenant_id == asset.tenant_id,
        artifacts.c.env == asset.env, artifacts.c.deleted_at.is_(None),
    ).order_by(artifacts.c.id)).mappings()
    return [DerivedArtifact.model_validate(dict(r)) for r in rows]


def artifacts_with_id_prefix(conn: Connection, tenant_id: str, env: str, kind: str,
                             *prefixes: str) -> list[DerivedArtifact]:
    """Artifacts whose id starts with one of the alphanumeric `prefixes` followed by
    lower-case hex, in one query (a bulk delete asks for a batch's worth at once).

    Primary-key range scans rather than LIKE, which PostgreSQL can only answer
    from the index under the C collation. Every id in range is the prefix plus
    [0-9a-f] characters, and those sort below "g" in any collation.
    """
    if not prefixes:
        return []
    c = artifacts.c
    rows = conn.execute(select(artifacts).where(
        or_(*(and_(c.id >= prefix, c.id < prefix + "g") for prefix in prefixes)),
        c.tenant_id == tenant_id, c.env == env, c.kind == kind, c.deleted_at.is_(None),
    ).order_by(c.id)).mappings()
    return [DerivedArtifact.model_validate(dict(r)) for r in rows]


def mark_artifacts_deleted(conn: Connection, tenant_id: str, env: str, ids: list[str],
                           now: datetime) -> None:
    """Tombstones: the rows stay (lineage) but no longer keep their blobs alive."""
    if ids:
        conn.execute(update(artifacts).where(
            artifacts.c.id.in_(ids), artifacts.c.tenant_id == tenant_id,
            artifacts.c.env == env, artifacts.c.deleted_at.is_(None)).values(deleted_at=now))
