"""100 idle subscribers cost no thread each and no query each: one reader fans out.

Queries are counted on the served app's engine. While 100 streams sit idle
(heartbeats flowing), PostgreSQL makes no query at all (LISTEN waits on its
own connection) and SQLite makes exactly the one counters query per poll
tick, however many subscribers there are. One commit then reaches all 100
with one read of the new rows (beside it, on SQLite, the process's caches
look once for deletions among them: docs/caches.md).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import create_audit, created, new_tenant
from engines.events.tests.conftest import Live

pytestmark = [pytest.mark.slow]
SUBSCRIBERS = 100
IDLE_SECONDS = 2.0


def test_hundred_idle_subscribers_add_no_queries(make_live) -> None:
    live: Live = make_live(events_heartbeat_seconds=0.3, sse_max_streams_per_tenant=SUBSCRIBERS,
                           sse_max_streams=2 * SUBSCRIBERS)
    tenant = new_tenant()
    statements: list[str] = []
    engine = live.stack.runtime.engine

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    threads_before = threading.active_count()
    readers = [live.subscribe(tenant=tenant) for _ in range(SUBSCRIBERS)]
    for reader in readers:  # each has registered and seen a heartbeat: fully idle
        assert reader.next_comment() == "connected"
        assert reader.next_comment() == "heartbeat"
    server_threads = threading.active_count() - threads_before - SUBSCRIBERS  # minus readers
    assert server_threads < 10  # no thread per subscriber in the server

    event.listen(engine, "before_cursor_execute", count)
    try:
        time.sleep(IDLE_SECONDS)
        idle = list(statements)
        statements.clear()
        record = created(create_audit(live.stack, new_canvas(), tenant=tenant))
        for reader in readers:
            assert reader.next_event().data["data"]["artifact_id"] == record["id"]
        time.sleep(live.stack.settings.events_poll_seconds * 2)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    if live.stack.name == "s3-postgres":
        assert idle == []
    else:
        ticks = IDLE_SECONDS / live.stack.settings.events_poll_seconds
        assert all("event_sequences" in s for s in idle), idle
        assert len(idle) <= ticks + 2
    # the caches' narrow look for deletions (SQLite: once per written scope and tick,
    # per process) is not a subscriber's read
    feed_reads = [s for s in statements if "FROM dataset_events" in s and "LIKE" not in s]
    assert len(feed_reads) == 1, feed_reads  # one read for all 100 subscribers
