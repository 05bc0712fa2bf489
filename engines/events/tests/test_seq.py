"""`seq`: per (tenant, env), strictly increasing in commit order, no gap a reader could see
filled later, and existing events numbered by the migration."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import insert, select

from conftest import Stack
from engines.canvas_artifacts.tests.helpers import new_tenant
from engines.common.ids import new_id
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import alembic_config, upgrade
from engines.db.writer import write_transaction
from engines.events.feed import last_seq, read_after
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend, events

WRITERS, EACH = 6, 8


def _event(tenant: str, env: str = "dev", created_at: datetime | None = None) -> DatasetEvent:
    return DatasetEvent(id=new_id("dse"), tenant_id=tenant, env=env,
                        event_type="canvas.audit.created", subject_id=new_id("art"),
                        document_id=new_id("nxd"), lineage={"canvas_id": "c_1"},
                        created_at=created_at or datetime.now(UTC))


def test_concurrent_writers_never_expose_a_gap(stack: Stack) -> None:
    engine, backend, tenant = stack.runtime.engine, SqlNexusBackend(), new_tenant()
    done = threading.Event()
    observed: list[list[int]] = []

    def write() -> None:
        for _ in range(EACH):
            with write_transaction(engine) as tx:
                backend.record_event(tx, _event(tenant))
                time.sleep(0.005)  # hold the transaction open: commits interleave

    def read() -> None:
        while not done.is_set():
            with engine.connect() as conn:
                observed.append([int(s) for s in conn.execute(select(events.c.seq).where(
                    events.c.tenant_id == tenant).order_by(events.c.seq)).scalars()])

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write) for _ in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()

    for seen in observed:  # whatever a reader saw was a complete prefix: 1..N
        assert seen == list(range(1, len(seen) + 1))
    with engine.connect() as conn:
        found, last, more = read_after(conn, (tenant, "dev"), 0, limit=1000)
        assert [e.seq for e in found] == list(range(1, WRITERS * EACH + 1))
        assert (last, more) == (WRITERS * EACH, False)
        assert last_seq(conn, (tenant, "dev")) == WRITERS * EACH
        assert last_seq(conn, (tenant, "prod")) == 0


def test_each_tenant_and_env_has_its_own_sequence(stack: Stack) -> None:
    engine, backend = stack.runtime.engine, SqlNexusBackend()
    one, two = new_tenant(), new_tenant()
    written = [_event(one), _event(two), _event(one, "prod"), _event(one), _event(two)]
    for event in written:
        with write_transaction(engine) as tx:
            backend.record_event(tx, event)
    assert [e.seq for e in written] == [1, 1, 1, 2, 2]


def test_a_rolled_back_event_leaves_no_hole(local: Stack) -> None:
    engine, backend, tenant = local.runtime.engine, SqlNexusBackend(), new_tenant()
    try:
        with write_transaction(engine) as tx:
            backend.record_event(tx, _event(tenant))
            raise RuntimeError("the artifact's transaction fails")
    except RuntimeError:
        pass
    kept = _event(tenant)
    with write_transaction(engine) as tx:
        backend.record_event(tx, kept)
    assert kept.seq == 1


def test_migration_numbers_existing_events(tmp_path: Path) -> None:
    engine = build_engine(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}"))
    config = alembic_config(str(engine.url))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    old = [_event("t_a", created_at=start + timedelta(seconds=3)),
           _event("t_b", created_at=start + timedelta(seconds=1)),
           _event("t_a", created_at=start + timedelta(seconds=2))]
    with engine.begin() as conn:
        conn.execute(insert(events), [e.model_dump(exclude={"seq"}) for e in old])
    upgrade(engine)

    with engine.connect() as conn:
        seqs = dict(conn.execute(select(events.c.id, events.c.seq)).all())
        assert (seqs[old[2].id], seqs[old[0].id], seqs[old[1].id]) == (1, 2, 1)
        assert last_seq(conn, ("t_a", "dev")) == 2
    new = _event("t_a")
    with write_transaction(engine) as tx:
        SqlNexusBackend().record_event(tx, new)
    assert new.seq == 3
    engine.dispose()
