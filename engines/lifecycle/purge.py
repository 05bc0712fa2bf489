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

from sqlalchemy import ColumnElement, Engine, Table, delete, func, select, tuple_

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


def _scope(table: Table, tenant_id: str, envs: list[str]) -> tuple[ColumnElement[bool], ...]:
    """The rows of (tenant, envs) in one table; earlier purges' events are not data."""
    scope = (table.c.tenant_id == tenant_id, table.c.env.in_(envs))
    if table is dataset_events:
        return (*scope, dataset_events.c.event_type != SCOPE_PURGED)
    return scope


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
def _delete_in_batches(engine: Engine, table: Table, scope: tuple[ColumnElement[bool], ...],
                       progress: Callable[[str], None]) -> int:
    """DELETE the scope's rows BATCH at a time, each batch its own transaction: no
    transaction holds a million row locks, and other tenants' writes interleave."""
    key = list(table.primary_key.columns)
    chosen = select(*key).where(*scope).limit(BATCH)
    statement = delete(table).where(
        key[0].in_(chosen.scalar_subquery()) if len(key) == 1 else tuple_(*key).in_(chosen))
    total = 0
    while True:
        with write_transaction(engine) as conn:
            count = conn.execute(statement).rowcount
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
        scope = _scope(table, tenant_id, envs)
        if apply:
            count = _delete_in_batches(engine, table, scope, progress)
        else:
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).where(*scope)).scalar_one()
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
