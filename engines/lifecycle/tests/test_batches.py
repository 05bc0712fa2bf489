"""Bulk deletes at scale: every batch is a few statements whatever its size, and says how
long it held the scope's event counter; purge batches read in a (tenant, env) index."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from conftest import Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import create_preview, created, new_tenant
from engines.common.ids import new_id
from engines.db.writer import write_transaction
from engines.lifecycle import delete as lifecycle
from engines.lifecycle.purge import PURGED_TABLES, _batch_order
from engines.lifecycle.references import delete_unreferenced
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend, events


def _event(tenant: str) -> DatasetEvent:
    return DatasetEvent(id=new_id("dse"), tenant_id=tenant, env="dev",
                        event_type="canvas.audit.deleted", subject_id=new_id("art"),
                        document_id="", lineage={}, created_at=datetime.now(UTC))


def test_record_events_numbers_each_feed_in_one_go(stack: Stack) -> None:
    a, b = new_tenant(), new_tenant()
    backend = SqlNexusBackend()
    with write_transaction(stack.runtime.engine) as tx:
        backend.record_event(tx, _event(a))
    batch = [_event(a), _event(b), _event(a), _event(b), _event(a)]
    with write_transaction(stack.runtime.engine) as tx:
        backend.record_events(tx, batch)
    assert [e.seq for e in batch] == [2, 1, 3, 2, 4], "list order within each feed"
    with stack.runtime.engine.connect() as conn:
        stored = dict(conn.execute(select(events.c.id, events.c.seq).where(
            events.c.tenant_id.in_([a, b]))).all())
    assert all(stored[e.id] == e.seq for e in batch)


def test_a_canvas_delete_costs_the_same_statements_per_batch_whatever_its_size(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    for rev in range(12):
        created(create_preview(stack, canvas, rev=rev, tenant=tenant))
    statements: list[str] = []

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    engine = stack.runtime.engine
    per_batch = {}
    for size in (3, 6):
        monkeypatch.setattr(lifecycle, "BATCH", size)
        statements.clear()
        event.listen(engine, "before_cursor_execute", note)
        try:
            with write_transaction(engine) as conn:
                records = lifecycle.repo.list_records(conn, tenant, "dev", canvas, kind=None,
                                                      rev=None, before_id=None, limit=size)
                deletion = lifecycle.Deletion("deleted", "u", "r", "c")
                lifecycle._announce(conn, stack.runtime, lifecycle._tombstone(
                    conn, stack.runtime, records, deletion, []), deletion)
        finally:
            event.remove(engine, "before_cursor_execute", note)
        per_batch[size] = len(statements)
    assert per_batch[3] == per_batch[6] <= 16, per_batch

    monkeypatch.setattr(lifecycle, "BATCH", 2)
    with caplog.at_level(logging.INFO, logger="engines.lifecycle"):
        deleted = lifecycle.delete_canvas(stack.runtime, tenant, "dev", canvas,
                                          lifecycle.Deletion("deleted", "u", "r", "c"))
    assert deleted == 3
    [line] = [r.getMessage() for r in caplog.records if "deleted canvas" in r.getMessage()]
    assert f"{canvas}: 3 artifacts; 4 batches, longest " in line, "2, 1, none below, none"
    assert "usage and event counter held at most" in line


def test_every_purged_table_is_batched_in_a_tenant_index_order() -> None:
    for table in PURGED_TABLES:
        order = [c.name for c in _batch_order(table)]
        assert order[:2] == ["tenant_id", "env"], (table.name, order)
        assert any([c.name for c in index.columns] == order for index in table.indexes) \
            or order == [c.name for c in table.primary_key.columns], table.name


def test_delete_unreferenced_asks_once_and_keeps_what_is_referenced(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    kept = created(create_preview(stack, canvas, tenant=tenant))
    store = stack.runtime.store
    live = store.key_for(kept["uri"])
    orphan = f"tenants/{tenant}/dev/canvas/{canvas}/preview/art_orphan.png"
    store.put_bytes(orphan, b"\x89PNG orphan", "image/png")
    with caplog.at_level(logging.INFO, logger="engines.lifecycle.references"):
        assert delete_unreferenced(stack.runtime.engine, store, [live, orphan]) == []
    assert store.exists(live), "a live record references it"
    assert not store.exists(orphan)
    said = [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "engines.lifecycle.references"]
    assert said == [(logging.INFO, "kept 1 of 2 blobs that committed records still reference "
                     f"(first: {live})")], "one line for the batch, not a warning per blob"


def test_a_slow_batch_halves_the_next_and_fast_ones_grow_it_back_to_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "BATCH", 200)
    times = lifecycle.BatchTimes()
    assert times.next_size() == 200
    slow, fast, middling = (lifecycle.BATCH_SECONDS * f for f in (4, 0.1, 0.75))
    for expected in (100, 50, 25, 12, 6, 3, 1, 1):
        times.add(slow, slow / 2)
        assert times.next_size() == expected
    times.add(middling, 0)
    assert times.next_size() == 1, "within the bound: the size stays"
    grown = []
    while times.next_size() < 200:
        times.add(fast, 0)
        grown.append(times.next_size())
    assert grown == [2, 3, 4, 6, 9, 13, 19, 28, 42, 63, 94, 141, 200]
    times.add(fast, 0)
    assert times.next_size() == 200, "never past BATCH"
    assert times.batches == 23 and times.longest == slow and times.longest_lock == slow / 2


def test_a_canvas_delete_takes_smaller_batches_after_a_slow_one(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    for rev in range(7):
        created(create_preview(stack, canvas, rev=rev, tenant=tenant))
    monkeypatch.setattr(lifecycle, "BATCH", 4)
    monkeypatch.setattr(lifecycle, "BATCH_SECONDS", -1.0)  # every batch ran long
    sizes: list[int] = []
    belows: list[str | None] = []
    listed = lifecycle.repo.list_records

    def spy(*args: object, **kwargs: object) -> list[object]:
        sizes.append(int(kwargs["limit"]))  # type: ignore[call-overload]
        belows.append(kwargs["before_id"])  # type: ignore[arg-type]
        found = listed(*args, **kwargs)  # type: ignore[arg-type]
        batches.append([r.id for r in found])
        return found  # type: ignore[return-value]

    batches: list[list[str]] = []
    monkeypatch.setattr(lifecycle.repo, "list_records", spy)
    deleted = lifecycle.delete_canvas(stack.runtime, tenant, "dev", canvas,
                                      lifecycle.Deletion("deleted", "u", "r", "c"))
    assert deleted == 7
    assert sizes == [4, 2, 1, 1, 1], "then nothing below the last, nor from the top"
    assert belows == [None, *(min(b) for b in batches[:3]), None], \
        "each batch lists below the last one's oldest id, never past its tombstones"
