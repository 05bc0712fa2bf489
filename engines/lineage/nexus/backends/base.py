"""The Nexus backend interface: write a document with its event, read lineage."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection

from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.schemas import NexusDocument


class SubjectLineage(NamedTuple):
    """One subject's documents and events, each in id order."""

    documents: list[NexusDocument]
    events: list[DatasetEvent]


class NexusBackend(abc.ABC):
    @abc.abstractmethod
    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        """Write both inside the caller's transaction; raise on any failure."""

    @abc.abstractmethod
    def record_event(self, tx: Connection, event: DatasetEvent) -> None:
        """Write a lone event (e.g. a deletion) inside the caller's transaction, with its seq."""

    def record_events(self, tx: Connection, events: Sequence[DatasetEvent]) -> None:
        """Many lone events (a bulk delete's batch) inside the caller's transaction."""
        for event in events:
            self.record_event(tx, event)

    @abc.abstractmethod
    def documents_for(self, conn: Connection, tenant_id: str, env: str,
                      subject_id: str) -> list[NexusDocument]: ...

    @abc.abstractmethod
    def first_documents(self, conn: Connection, tenant_id: str, env: str,
                        subject_ids: Sequence[str]) -> dict[str, str]:
        """The id of each subject's first document (what its deletion event names)."""

    @abc.abstractmethod
    def events_for(self, conn: Connection, tenant_id: str, env: str,
                   subject_id: str) -> list[DatasetEvent]: ...

    @abc.abstractmethod
    def lineage_of(self, conn: Connection, tenant_id: str, env: str,
                   subject_ids: Sequence[str]) -> dict[str, SubjectLineage]:
        """Every subject's lineage in one query (an export reads a page of them at once)."""
