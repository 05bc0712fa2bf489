"""Nexus on the service's SQL database, so lineage commits with the artifact."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Index, String, Table, insert, select

from engines.dataset.events.schemas import DatasetEvent
from engines.db.metadata import JsonDoc, UtcDateTime, metadata
from engines.nexus.backends.base import NexusBackend
from engines.nexus.schemas import NexusDocument

documents = Table(
    "nexus_documents", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("lineage", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_nexus_documents_subject", "tenant_id", "env", "subject_id"),
)

events = Table(
    "dataset_events", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("document_id", String(64), nullable=False),
    Column("lineage", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_dataset_events_subject", "tenant_id", "env", "subject_id"),
)


class SqlNexusBackend(NexusBackend):
    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        tx.execute(insert(documents), document.model_dump())
        tx.execute(insert(events), event.model_dump())

    def record_event(self, tx: Connection, event: DatasetEvent) -> None:
        tx.execute(insert(events), event.model_dump())

    def documents_for(self, conn: Connection, tenant_id: str, env: str,
                      subject_id: str) -> list[NexusDocument]:
        rows = conn.execute(select(documents).where(
            documents.c.tenant_id == tenant_id, documents.c.env == env,
            documents.c.subject_id == subject_id).order_by(documents.c.id)).mappings()
        return [NexusDocument.model_validate(dict(r)) for r in rows]

    def events_for(self, conn: Connection, tenant_id: str, env: str,
                   subject_id: str) -> list[DatasetEvent]:
        rows = conn.execute(select(events).where(
            events.c.tenant_id == tenant_id, events.c.env == env,
            events.c.subject_id == subject_id).order_by(events.c.id)).mappings()
        return [DatasetEvent.model_validate(dict(r)) for r in rows]
