"""Tenant purge (offboarding, erasure requests): every trace of a tenant's scope.

Rows go first, table by table, in batches of BATCH rows that each commit
(an index on (tenant_id, env) serves every table's batches); then one
`tenant.purged` event per env erased; then every blob under
`tenants/{tenant_id}/{env}/`. A crash anywhere leaves a state the next run
finishes: rows already gone count 0, blobs left behind are still under the
prefix. Another tenant's data is untouched: every statement is scoped by
tenant_id (and env), and the blob prefix is the tenant's own.

The event is how running servers learn of the purge: their events hubs drop
every cache entry of the scope (engines/common/cache.py), so none of them
keeps answering from, or skipping inserts for, rows that are gone. It holds
only the tenant, the env and the time, is not published on SSE or to
webhooks, and is the one row a purge leaves in `dataset_events` (a later
purge keeps it and writes another).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Table,
    delete,
    func,
    select,
    tuple_,
)

from engines.canvas_artifacts.quotas import tenant_usage
from engines.canvas_artifacts.repository import canvas_artifacts, replay_indexes
from engines.canvas_artifacts.uploads import upload_sessions
from engines.common.ids import new_id
from engines.db.idempotency import idempotency_keys
from engines.db.writer import write_transaction
from engines.events.webhooks.tables import deliveries as webhook_deliveries
from engines.events.webhooks.tables import subscriptions as webhook_subscriptions
from engines.lifecycle.references import delete_if_unreferenced
from engines.lineage.dataset_events import SCOPE_PURGED, DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend
from engines.lineage.nexus.backends.sql import documents as nexus_documents
from engines.lineage.nexus.backends.sql import events as dataset_events
from engines.media_v2.repository import artifacts as media_artifacts
from engines.media_v2.repository import assets as media_assets
from engines.storage.base import BlobStore
from engines.storage.keys import tenant_prefix

BATCH = 5000
"""Rows per DELETE transaction (each table is deleted in batches, children first)."""
PROGRESS_EVERY = 100_000

PURGED_TABLES: tuple[Table, ...] = (
    webhook_deliveries, webhook_subscriptions, dataset_events, nexus_documents, replay_indexes,
    canvas_artifacts, media_artifacts, media_assets, idempotency_keys, tenant_usage,
    upload_sessions,
)
"""Every table holding tenant data, children before parents; each has tenant_id and env.

Webhook attempts go with their deliveries (ON DELETE CASCADE). `event_sequences`
stays: a purged scope that is used again keeps numbering after its last seq, so a
subscriber resuming from an old `Last-Event-ID` never misses a new event."""


@dataclass
class PurgeReport:
    tenant_id: str
    envs: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    applied: bool = False

    def summary(self) -> dict[str, object]:
        return {"tenant_id": self.tenant_id, "envs": self.envs, "rows": self.rows,
                "blobs": self.blobs, "applied": self.applied}


def _envs(engine: Engine, tenant_id: str) -> list[str]:
    found: set[str] = set()
    with engine.connect() as conn:
        for table in PURGED_TABLES:
            found |= set(conn.execute(select(table.c.env).where(
                table.c.tenant_id == tenant_id).distinct()).scalars())
    return sorted(found)


def _scope(table: Table, tenant_id: str, env: str) -> tuple[ColumnElement[bool], ...]:
    """The rows of (tenant, env) in one table; earlier purges' events are not data."""
    scope = (table.c.tenant_id == tenant_id, table.c.env == env)
    if table is dataset_events:
        return (*scope, dataset_events.c.event_type != SCOPE_PURGED)
    return scope


def _batch_order(table: Table) -> list[Column[object]]:
    """The columns of the shortest full index that starts with (tenant_id, env).

    A batch read in this order is a range scan of that index, stopped after BATCH
    entries. Unordered, the planner may pick a sequential scan that stops at BATCH
    rows as soon as it meets them: cheap on paper, but the tenant's rows sit together
    in the table, so every batch would read past the other tenants' to reach them."""
    def scoped(columns: list[Column[object]]) -> bool:
        return [c.name for c in columns][:2] == ["tenant_id", "env"]

    key = list(table.primary_key.columns)
    found = [list(index.columns) for index in sorted(table.indexes, key=lambda i: str(i.name))
             if index.dialect_options["postgresql"].get("where") is None]
    return min((c for c in [*found, key] if scoped(c)), key=len, default=key)


def purge_batch(conn: Connection, table: Table, tenant_id: str, env: str) -> int:
    """Delete up to BATCH rows of (tenant, env) from one table; returns how many were chosen.

    Two statements: the keys, read in index order, then a DELETE of exactly those
    keys (a primary-key lookup each). One `DELETE ... IN (subquery)` left the join
    to the planner, which hashed the chosen keys and scanned the whole table."""
    key = list(table.primary_key.columns)
    chosen = conn.execute(select(*key).where(*_scope(table, tenant_id, env))
                          .order_by(*_batch_order(table)).limit(BATCH)).all()
    if chosen:
        match = (key[0].in_([row[0] for row in chosen]) if len(key) == 1
                 else tuple_(*key).in_([tuple(row) for row in chosen]))
        conn.execute(delete(table).where(match))
    return len(chosen)


def _announce(engine: Engine, tenant_id: str, envs: list[str]) -> None:
    """One `tenant.purged` event per env, after its rows are gone: a server that reads it
    drops its caches of the scope, and anything it reads later finds the rows gone."""
    backend = SqlNexusBackend()
    now = datetime.now(UTC)
    for env in envs:
        with write_transaction(engine) as conn:
            backend.record_event(conn, DatasetEvent(
                id=new_id("dse"), tenant_id=tenant_id, env=env, event_type=SCOPE_PURGED,
                subject_id=tenant_id, document_id="",
                lineage={"tenant_id": tenant_id, "env": env, "reason": "purged",
                         "purged_at": now.isoformat()}, created_at=now))
def _delete_in_batches(engine: Engine, table: Table, tenant_id: str, env: str,
                       progress: Callable[[str], None]) -> int:
    """DELETE the scope's rows BATCH at a time, each batch its own transaction: no
    transaction holds a million row locks, and other tenants' writes interleave."""
    total = 0
    while True:
        with write_transaction(engine) as conn:
            count = purge_batch(conn, table, tenant_id, env)
        total += count
        if count < BATCH:
            return total
        if total % PROGRESS_EVERY < BATCH:
            progress(f"purge: {table.name}: {total} rows so far")


def purge(store: BlobStore, engine: Engine, tenant_id: str, env: str | None, *, apply: bool,
          progress: Callable[[str], None] = lambda _m: None) -> PurgeReport:
    """Remove (or with apply=False, count) everything of (tenant, env or every env)."""
    envs = [env] if env else _envs(engine, tenant_id)
    report = PurgeReport(tenant_id=tenant_id, envs=envs, applied=apply)
    for table in PURGED_TABLES:
        count = 0
        for one in envs:  # an env at a time: (tenant_id, env) equal, the index gives the order
            if apply:
                count += _delete_in_batches(engine, table, tenant_id, one, progress)
            else:
                with engine.connect() as conn:
                    count += conn.execute(select(func.count()).where(
                        *_scope(table, tenant_id, one))).scalar_one()
        report.rows[table.name] = count
        progress(f"purge: {table.name}: {count} rows{'' if apply else ' (dry run)'}")
    if apply:
        _announce(engine, tenant_id, envs)
    prefixes = [tenant_prefix(tenant_id, e) for e in envs] if env else [f"tenants/{tenant_id}/"]
    for prefix in prefixes:
        for info in store.iter_blobs(prefix):
            if apply and not delete_if_unreferenced(engine, store, info.key):
                continue
            report.blobs += 1
            if report.blobs % 1000 == 0:
                progress(f"purge: {report.blobs} blobs")
    progress(f"purge: {report.blobs} blobs{'' if apply else ' (dry run)'}")
    return report
