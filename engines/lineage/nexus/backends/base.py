"""The Nexus backend interface: write a document with its event, read lineage."""

from __future__ import annotations

import abc

from sqlalchemy import Connection

from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.schemas import NexusDocument


class NexusBackend(abc.ABC):
    @abc.abstractmethod
    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        """Write both inside the caller's transaction; raise on any failure."""

    @abc.abstractmethod
    def record_event(self, tx: Connection, event: DatasetEvent) -> None:
        """Write a lone event (e.g. a deletion) inside the caller's transaction, with its seq."""

    @abc.abstractmethod
    def documents_for(self, conn: Connection, tenant_id: str, env: str,
                      subject_id: str) -> list[NexusDocument]: ...

    @abc.abstractmethod
    def events_for(self, conn: Connection, tenant_id: str, env: str,
                   subject_id: str) -> list[DatasetEvent]: ...
