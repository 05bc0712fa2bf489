"""The SQL Nexus backend on both databases: joins the caller's transaction, reads are scoped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engines.common.ids import new_id
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
