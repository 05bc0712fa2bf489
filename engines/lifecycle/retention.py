"""Retention: how long each kind of artifact is kept, and which ones are past it.

The configured default per kind (`RETENTION_PREVIEW`, `RETENTION_REPLAY`,
`RETENTION_AUDIT`; unset keeps forever) is overridden per tenant by the
operator (`engines retention set`): an override for the tenant's env wins
over one for all its envs (`*`), which wins over the configuration. A keep
of 0 is "forever", so a tenant can be exempted from a global default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Select,
    String,
    Table,
    delete,
    exists,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.orm import aliased

from engines.canvas_artifacts.models import ALL_ENVS
from engines.canvas_artifacts.repository import canvas_artifacts
from engines.config import Settings
from engines.db.metadata import UtcDateTime, metadata
from engines.db.upsert import upsert
from engines.lineage.nexus.backends.sql import event_sequences

retention_overrides = Table(
    "retention_overrides", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("env", String(16), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("keep_seconds", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Override:
    tenant_id: str
    env: str
    kind: str
    keep: timedelta | None
    """None: keep forever."""


def set_override(conn: Connection, tenant_id: str, env: str, kind: str,
                 keep: timedelta | None) -> None:
    seconds = int(keep.total_seconds()) if keep else 0
    conn.execute(upsert(conn, retention_overrides, ["tenant_id", "env", "kind"]),
                 {"tenant_id": tenant_id, "env": env, "kind": kind, "keep_seconds": seconds,
                  "updated_at": datetime.now(UTC)})


def unset_override(conn: Connection, tenant_id: str, env: str, kind: str) -> int:
    t = retention_overrides.c
    return conn.execute(delete(retention_overrides).where(
        t.tenant_id == tenant_id, t.env == env, t.kind == kind)).rowcount


def overrides(conn: Connection) -> list[Override]:
    t = retention_overrides.c
    rows = conn.execute(select(t.tenant_id, t.env, t.kind, t.keep_seconds).order_by(
        t.tenant_id, t.env, t.kind))
    return [Override(r.tenant_id, r.env, r.kind,
                     timedelta(seconds=r.keep_seconds) if r.keep_seconds else None)
            for r in rows]


def effective_keep(settings: Settings, found: list[Override], tenant_id: str, env: str,
                   kind: str) -> timedelta | None:
    """The retention in force for one (tenant, env, kind): the most specific rule wins."""
    by_scope = {(o.env): o.keep for o in found if o.tenant_id == tenant_id and o.kind == kind}
    for scope in (env, ALL_ENVS):
        if scope in by_scope:
            return by_scope[scope]
    return settings.retention_for(kind)


def scopes_with_artifacts(conn: Connection, kind: str) -> list[tuple[str, str]]:
    """The (tenant, env) pairs holding live artifacts of a kind.

    Every (tenant, env) that ever wrote an artifact has its event counter row,
    a small table; each is checked with one probe of the expiry index, where a
    DISTINCT over the artifacts would read all of them.
    """
    c, s = canvas_artifacts.c, event_sequences.c
    return [tuple(r) for r in conn.execute(select(s.tenant_id, s.env).where(exists().where(
        c.tenant_id == s.tenant_id, c.env == s.env, c.kind == kind,
        c.deleted_at.is_(None))).order_by(s.tenant_id, s.env))]


def _expired(tenant_id: str, env: str, kind: str, cutoff: datetime, *,
             keep_latest: bool) -> Select[tuple[str]]:
    """Live artifacts created before cutoff: a range of the expiry index.

    With keep_latest, an artifact is only expired when a newer live one of
    its kind exists on its canvas (newer as `latest` orders: rev, then id),
    so a canvas never loses its current preview to retention. That test is one
    descent of the `latest` index per candidate, to just past its (rev, id) (a
    row comparison: the index's own order, where `rev > x OR ...` would walk
    every older entry of a 100k-artifact canvas); OFFSET 0 keeps PostgreSQL from
    turning it into a join, which it plans as a hash of every live artifact of
    the kind (a sequential scan of the table) once it expects many candidates.
    """
    c = canvas_artifacts.c
    query = select(c.id).where(c.tenant_id == tenant_id, c.env == env, c.kind == kind,
                               c.deleted_at.is_(None), c.created_at < cutoff)
    if keep_latest:
        newer = aliased(canvas_artifacts)
        query = query.where(select(literal(1)).where(
            newer.c.tenant_id == c.tenant_id, newer.c.env == c.env,
            newer.c.canvas_id == c.canvas_id, newer.c.kind == c.kind,
            newer.c.deleted_at.is_(None),
            tuple_(newer.c.rev, newer.c.id) > tuple_(c.rev, c.id))
            .limit(1).offset(0).exists())
    return query


def expired(conn: Connection, tenant_id: str, env: str, kind: str, cutoff: datetime, *,
            keep_latest: bool, limit: int,
            after: tuple[datetime, str] | None = None) -> list[tuple[datetime, str]]:
    """The (created_at, id) of up to `limit` artifacts past their retention, oldest first
    (the expiry index's order), after the (created_at, id) `after` when given: a batch or a
    page starts where the last one ended instead of walking its tombstones and kept ones,
    and each is a short statement however many are due."""
    query = _expired(tenant_id, env, kind, cutoff, keep_latest=keep_latest)
    c = canvas_artifacts.c
    if after is not None:
        query = query.where(tuple_(c.created_at, c.id) > tuple_(
            literal(after[0], c.created_at.type), literal(after[1], c.id.type)))
    query = query.with_only_columns(c.created_at, c.id)
    return [(row.created_at, row.id) for row in conn.execute(
        query.order_by(c.created_at, c.id).limit(limit))]


def count_candidates(conn: Connection, tenant_id: str, env: str, kind: str,
                     cutoff: datetime) -> int:
    """How many live artifacts were created before cutoff: one range of the expiry index.

    What expires, unless the newest of each canvas is kept (`RETENTION_KEEP_LATEST`),
    when it is an upper bound: that test is a probe per candidate, which `expired` makes
    a batch at a time (counted up front it was one statement over every candidate, past
    the statement timeout at a million)."""
    query = _expired(tenant_id, env, kind, cutoff, keep_latest=False)
    return conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
