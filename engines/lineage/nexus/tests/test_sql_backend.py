"""The SQL Nexus backend on both databases: joins the caller's transaction, reads are scoped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from engines.common.ids import new_id
from engines.db.writer import run_write
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend
from engines.lineage.nexus.schemas import NexusDocument, NexusKind


def _pair(tenant: str, env: str, subject: str) -> tuple[NexusDocument, DatasetEvent]:
    now = datetime.now(UTC)
    lineage = {"tenant_id": tenant, "env": env, "artifact_id": subject, "rev": 3}
    document = NexusDocument(id=new_id("nxd"), tenant_id=tenant, env=env,
                             kind=NexusKind.canvas_preview, subject_id=subject,
                             lineage=lineage, created_at=now)
    event = DatasetEvent(id=new_id("dse"), tenant_id=tenant, env=env,
                         event_type="canvas.preview.created", subject_id=subject,
                         document_id=document.id, lineage=lineage, created_at=now)
    return document, event


def test_records_round_trip_and_stay_in_their_scope(stack) -> None:
    backend = SqlNexusBackend()
    subject = new_id("art")
    document, event = _pair("t_nexus", "dev", subject)
    with stack.runtime.engine.begin() as tx:
        backend.record(tx, document, event)
    with stack.runtime.engine.connect() as conn:
        assert backend.documents_for(conn, "t_nexus", "dev", subject) == [document]
        assert backend.events_for(conn, "t_nexus", "dev", subject) == [event]
        assert backend.documents_for(conn, "t_other", "dev", subject) == []
        assert backend.events_for(conn, "t_nexus", "prod", subject) == []


def test_a_rolled_back_transaction_leaves_no_lineage(stack) -> None:
    backend = SqlNexusBackend()
    subject = new_id("art")
    with pytest.raises(RuntimeError), stack.runtime.engine.begin() as tx:
        backend.record(tx, *_pair("t_nexus", "dev", subject))
        raise RuntimeError("a later write of the same create failed")
    with stack.runtime.engine.connect() as conn:
        assert backend.documents_for(conn, "t_nexus", "dev", subject) == []
        assert backend.events_for(conn, "t_nexus", "dev", subject) == []


def test_events_written_together_are_numbered_without_gaps(stack) -> None:
    """Concurrent creates (on SQLite one group-commit batch numbers them together): each
    feed's seqs run 1..n with no gap or repeat, and each document is written."""
    backend = SqlNexusBackend()
    pairs = [_pair("t_seqs", env, new_id("art")) for _ in range(12) for env in ("dev", "prod")]

    async def all_at_once() -> None:
        await asyncio.gather(*(run_write(stack.runtime.engine,
                                         lambda tx, pair=pair: backend.record(tx, *pair))
                               for pair in pairs))

    asyncio.run(all_at_once())
    with stack.runtime.engine.connect() as conn:
        for env in ("dev", "prod"):
            subjects = [document.subject_id for document, _event in pairs
                        if document.env == env]
            seqs = sorted(stored.seq for subject in subjects
                          for stored in backend.events_for(conn, "t_seqs", env, subject))
            assert seqs == list(range(1, 13))
        assert all(backend.documents_for(conn, "t_seqs", document.env, document.subject_id)
                   == [document] for document, _event in pairs)
