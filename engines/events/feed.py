"""Rows -> ordered events: `dataset_events` read in `seq` order as the public event JSON.

The rows are the outbox: whatever a reader (an SSE stream, the webhook
fan-out) has seen is summed up by one number per (tenant, env), the last seq
it read, so resuming is "every row with seq > N". Which Nexus event types
become which public event is the one table `PUBLIC_TYPES` below; other types
(`tenant.purged`) are not published, and a reader's cursor just moves past
them. `read_drops` is the caches' view of the same rows: only what makes an
entry stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, or_, select

from engines.lineage.dataset_events import GONE, SCOPE_PURGED
from engines.lineage.nexus.backends.sql import event_sequences, events

ARTIFACT_WRITTEN = "artifact_written"
ARTIFACT_DELETED = "artifact_deleted"
EVENT_NAMES = (ARTIFACT_WRITTEN, ARTIFACT_DELETED)

PUBLIC_TYPES = {"created": ARTIFACT_WRITTEN, "imported": ARTIFACT_WRITTEN,
                "deleted": ARTIFACT_DELETED, "expired": ARTIFACT_DELETED}
"""Last segment of a `canvas.{kind}.{what}` DatasetEvent type -> public event type."""

PAGE = 500

_ROUTING = ("tenant_id", "env", "project_id", "workspace_id", "surface_id", "app_id",
            "canvas_id", "actor_id")
_DATA = ("artifact_id", "kind", "rev", "mime_type", "size_bytes", "sha256", "uri",
         "media_artifact_id")

Key = tuple[str, str]
"""(tenant_id, env): the scope one feed, and one seq counter, belongs to."""


@dataclass(frozen=True, slots=True)
class FeedEvent:
    seq: int
    type: str
    canvas_id: str | None
    body: dict[str, Any]

    def json(self) -> bytes:
        return orjson.dumps(self.body)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def public_type(event_type: str) -> str | None:
    prefix, _, what = event_type.rpartition(".")
    return PUBLIC_TYPES.get(what) if prefix.startswith("canvas.") else None


def to_event(row: Mapping[str, Any]) -> FeedEvent | None:
    """The public event for one dataset_events row; None for types that are not published."""
    kind = public_type(row["event_type"])
    if kind is None:
        return None
    lineage = row["lineage"]
    data = {name: lineage.get(name) for name in _DATA}
    data["artifact_id"] = data["artifact_id"] or row["subject_id"]
    if kind == ARTIFACT_DELETED:
        data["reason"] = lineage.get("reason") or row["event_type"].rpartition(".")[2]
    routing = {name: lineage.get(name) for name in _ROUTING}
    routing.update(tenant_id=row["tenant_id"], env=row["env"])
    if lineage.get("mode"):  # X-Mode, when the writer sent one: the shape is unchanged without
        routing["mode"] = lineage["mode"]
    body = {"v": 1, "type": kind, "event_id": row["id"], "seq": row["seq"],
            "ts": _timestamp(row["created_at"]), "routing": routing,
            "ids": {"request_id": lineage.get("request_id"),
                    "correlation_id": lineage.get("correlation_id")},
            "data": data}
    return FeedEvent(seq=row["seq"], type=kind, canvas_id=routing["canvas_id"], body=body)


def read_after(conn: Connection, key: Key, after: int,
               limit: int = PAGE) -> tuple[list[FeedEvent], int, bool]:
    """Events of `key` with seq > after, in order: (events, last seq read, more left).

    The last seq read also counts rows that publish nothing, so a reader's
    cursor moves past them.
    """
    tenant_id, env = key
    rows = conn.execute(
        select(events).where(events.c.tenant_id == tenant_id, events.c.env == env,
                             events.c.seq > after)
        .order_by(events.c.seq).limit(limit)).mappings().all()
    found = [event for event in map(to_event, rows) if event is not None]
    last = rows[-1]["seq"] if rows else after
    return found, last, len(rows) == limit


_DROPPING = or_(events.c.event_type == SCOPE_PURGED,
                *(events.c.event_type.like(f"canvas.%{end}") for end in GONE))
"""The rows `drops_caches` names, as a filter."""


def read_drops(conn: Connection, key: Key, after: int, upto: int,
               limit: int = PAGE) -> tuple[list[str | None], int, bool]:
    """What caches must forget of `key` for after < seq <= upto: (subjects, last seq read,
    more left), a subject being a deleted or expired artifact's id, or None for a purge
    of the whole scope. Only those rows are read, not the creates between them."""
    tenant_id, env = key
    rows = conn.execute(
        select(events.c.seq, events.c.event_type, events.c.subject_id)
        .where(events.c.tenant_id == tenant_id, events.c.env == env, events.c.seq > after,
               events.c.seq <= upto, _DROPPING)
        .order_by(events.c.seq).limit(limit)).all()
    subjects = [None if event_type == SCOPE_PURGED else subject
                for _seq, event_type, subject in rows]
    more = len(rows) == limit
    return subjects, rows[-1].seq if more else upto, more


def read_event(conn: Connection, event_id: str) -> FeedEvent | None:
    row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
    return to_event(row) if row is not None else None


def last_seq(conn: Connection, key: Key) -> int:
    """The newest seq handed out for `key` (0 if none): where a live stream starts."""
    value = conn.execute(select(event_sequences.c.last_seq).where(
        event_sequences.c.tenant_id == key[0], event_sequences.c.env == key[1])).scalar()
    return int(value or 0)


def last_seqs(conn: Connection) -> dict[Key, int]:
    """Every (tenant, env)'s newest seq, in one query: what a poller compares against."""
    rows = conn.execute(select(event_sequences.c.tenant_id, event_sequences.c.env,
                               event_sequences.c.last_seq))
    return {(tenant_id, env): int(seq) for tenant_id, env, seq in rows}
