"""Nexus on the service's SQL database, so lineage commits with the artifact.

The `dataset_events` rows are also the events outbox (engines/events): each
row gets a `seq`, its position in the feed of its (tenant_id, env).

How `seq` is assigned, and why a reader never sees a gap filled later:
`event_sequences` holds one counter row per (tenant_id, env). Writing an
event increments that row (an upsert) in the writer's own transaction and
uses the new value. The row stays locked until the transaction ends, so
writers of one tenant/env take turns: the next one gets its number only
after the previous one committed (or rolled back, which also rolls back its
increment). Numbers are therefore handed out in commit order with no holes,
and a reader that saw seq N can never later find a committed N-1 it missed.
The lock is taken by the last statement of the artifact transaction, so it
is held only for the commit itself. On PostgreSQL the document, the number,
the event and the NOTIFY are one statement (one round trip). On SQLite the database write lock
serialises all writers anyway, and a group-commit batch (engines/db/writer.py)
numbers its events together: one upsert per (tenant_id, env) adds the
batch's count and the events take the numbers below the new value, in the
order their units ran, then go in as one executemany with the documents.

On PostgreSQL the same transaction sends `NOTIFY engines_events`, delivered
on commit, which wakes the per-process listeners; the rows stay the truth.
The payload is `{tenant_id} {env}`, followed by ` drop` for an event after
which caches must forget something (a deletion, an expiry, a purge), so a
listener reads the feed for its caches only when there is something to drop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

from engines.db.metadata import JsonDoc, UtcDateTime, metadata
from engines.db.writer import Part, defer_insert, deferred
from engines.lineage.dataset_events import DatasetEvent, drops_caches
from engines.lineage.nexus.backends.base import NexusBackend, SubjectLineage
from engines.lineage.nexus.schemas import NexusDocument

NOTIFY_CHANNEL = "engines_events"
NOTIFY_DROP = "drop"

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
    Column("seq", BigInteger),
    Index("ix_dataset_events_subject", "tenant_id", "env", "subject_id"),
    Index("ux_dataset_events_seq", "tenant_id", "env", "seq", unique=True),
)

event_sequences = Table(
    "event_sequences", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("env", String(16), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)


def _next_seq_statement(dialect: Any) -> Any:
    """Take `count` numbers of a feed: returns the last of them."""
    stmt = dialect.insert(event_sequences).values(
        tenant_id=bindparam("tenant_id"), env=bindparam("env"), last_seq=bindparam("count"))
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "env"],
        set_={"last_seq": event_sequences.c.last_seq + stmt.excluded.last_seq},
    ).returning(event_sequences.c.last_seq)


# Built once: constructing a statement costs more than running it (cache key, coercions),
# and these run in every create's transaction.
_NEXT_SEQ = {"postgresql": _next_seq_statement(postgresql), "sqlite": _next_seq_statement(sqlite)}
_INSERT_DOCUMENT = insert(documents)
_INSERT_EVENT = insert(events)


def _lineage_statement() -> Any:
    """The documents and events of many subjects as one UNION ALL, in id order."""
    ids = bindparam("subject_ids", expanding=True)

    def scoped(table: Table) -> Any:
        return and_(table.c.tenant_id == bindparam("tenant_id"),
                    table.c.env == bindparam("env"), table.c.subject_id.in_(ids))

    d, e = documents.c, events.c
    union = union_all(
        select(literal("document").label("source"), d.id, d.tenant_id, d.env, d.subject_id,
               d.kind, null().label("event_type"), null().label("document_id"), d.lineage,
               d.created_at, null().label("seq")).where(scoped(documents)),
        select(literal("event"), e.id, e.tenant_id, e.env, e.subject_id, null(), e.event_type,
               e.document_id, e.lineage, e.created_at, e.seq).where(scoped(events)))
    return union.order_by(union.selected_columns.id)


_LINEAGE = _lineage_statement()
_DOCUMENT_FIELDS = ("id", "tenant_id", "env", "kind", "subject_id", "lineage", "created_at")
_EVENT_FIELDS = ("id", "tenant_id", "env", "event_type", "subject_id", "document_id",
                 "lineage", "created_at", "seq")


def next_seq(tx: Connection, tenant_id: str, env: str, count: int = 1) -> int:
    """Take the next `count` numbers of (tenant_id, env), locking its counter until commit;
    returns the last of them."""
    stmt = _NEXT_SEQ["postgresql" if tx.dialect.name == "postgresql" else "sqlite"]
    return int(tx.execute(stmt, {"tenant_id": tenant_id, "env": env,
                                 "count": count}).scalar_one())


class _BatchEvents(Part):
    """The events of a group-commit batch, numbered and inserted together at its flush."""

    def __init__(self) -> None:
        self.events: list[DatasetEvent] = []

    def flush(self, conn: Connection) -> None:
        queued, self.events = self.events, []
        _insert_numbered(conn, queued)


def _insert_numbered(tx: Connection, events: Sequence[DatasetEvent]
                     ) -> dict[tuple[str, str], list[DatasetEvent]]:
    """Per feed one counter update for all its events (they take the numbers below the new
    value, in list order), then one INSERT of them all; returns the events by feed."""
    feeds: dict[tuple[str, str], list[DatasetEvent]] = {}
    for event in events:
        feeds.setdefault((event.tenant_id, event.env), []).append(event)
    for (tenant_id, env), feed in sorted(feeds.items()):
        last = next_seq(tx, tenant_id, env, len(feed))
        for seq, event in enumerate(feed, start=last - len(feed) + 1):
            event.seq = seq
    if events:
        tx.execute(_INSERT_EVENT, [event.model_dump() for event in events])
    return feeds


def _notify_payload(event: DatasetEvent) -> str:
    payload = f"{event.tenant_id} {event.env}"
    return f"{payload} {NOTIFY_DROP}" if drops_caches(event.event_type) else payload


def _typed(table: Table, prefix: str, names: Sequence[str]) -> list[Any]:
    return [bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in names]


def _pg_record_statement() -> Any:
    """PostgreSQL: the document, the feed's next number, the event and its NOTIFY as one
    statement of data-modifying CTEs, one round trip where four statements were. The
    counter row is locked by it until the transaction ends, as `next_seq` locks it."""
    document = insert(documents).values(
        dict(zip(_DOCUMENT_FIELDS, _typed(documents, "d_", _DOCUMENT_FIELDS), strict=True))
    ).cte("document")
    seq = _NEXT_SEQ["postgresql"].cte("seq")
    fields = _EVENT_FIELDS[:-1]  # all but seq
    event = insert(events).from_select(
        [*fields, "seq"], select(*_typed(events, "e_", fields), seq.c.last_seq)
    ).returning(events.c.seq).cte("event")
    return select(event.c.seq, func.pg_notify(bindparam("channel"), bindparam("payload"))
                  ).add_cte(document)


_PG_RECORD = _pg_record_statement()


class SqlNexusBackend(NexusBackend):
    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        if tx.dialect.name == "postgresql":
            params = {f"d_{name}": value for name, value in document.model_dump().items()}
            params.update({f"e_{name}": value for name, value in event.model_dump().items()})
            params.update(tenant_id=event.tenant_id, env=event.env, count=1,
                          channel=NOTIFY_CHANNEL, payload=_notify_payload(event))
            event.seq = int(tx.execute(_PG_RECORD, params).scalar_one())
            return
        defer_insert(tx, _INSERT_DOCUMENT, document.model_dump())
        batch = deferred(tx)
        if batch is None:
            self.record_event(tx, event)
        else:
            batch.part("nexus.events", _BatchEvents).events.append(event)

    def record_event(self, tx: Connection, event: DatasetEvent) -> None:
        self.record_events(tx, [event])

    def record_events(self, tx: Connection, events: Sequence[DatasetEvent]) -> None:
        """Numbered and inserted together, then one NOTIFY per feed: a bulk delete's
        batch costs a few statements, not a few per artifact."""
        feeds = _insert_numbered(tx, events)
        if tx.dialect.name == "postgresql":
            for (tenant_id, env), feed in sorted(feeds.items()):
                payload = f"{tenant_id} {env}"
                if any(drops_caches(event.event_type) for event in feed):
                    payload += f" {NOTIFY_DROP}"
                tx.execute(text("SELECT pg_notify(:channel, :payload)"),
                           {"channel": NOTIFY_CHANNEL, "payload": payload})

    def documents_for(self, conn: Connection, tenant_id: str, env: str,
                      subject_id: str) -> list[NexusDocument]:
        rows = conn.execute(select(documents).where(
            documents.c.tenant_id == tenant_id, documents.c.env == env,
            documents.c.subject_id == subject_id).order_by(documents.c.id)).mappings()
        return [NexusDocument.model_validate(dict(r)) for r in rows]

    def first_documents(self, conn: Connection, tenant_id: str, env: str,
                        subject_ids: Sequence[str]) -> dict[str, str]:
        d = documents.c
        rows = conn.execute(select(d.subject_id, func.min(d.id)).where(
            d.tenant_id == tenant_id, d.env == env, d.subject_id.in_(list(subject_ids)))
            .group_by(d.subject_id)) if subject_ids else []
        return {subject: document_id for subject, document_id in rows}

    def lineage_of(self, conn: Connection, tenant_id: str, env: str,
                   subject_ids: Sequence[str]) -> dict[str, SubjectLineage]:
        found = {subject: SubjectLineage([], []) for subject in subject_ids}
        if not subject_ids:
            return found
        rows = conn.execute(_LINEAGE, {"tenant_id": tenant_id, "env": env,
                                       "subject_ids": list(subject_ids)}).mappings()
        for row in rows:
            lineage = found[row["subject_id"]]
            if row["source"] == "document":
                lineage.documents.append(NexusDocument.model_validate(
                    {name: row[name] for name in _DOCUMENT_FIELDS}))
            else:
                lineage.events.append(DatasetEvent.model_validate(
                    {name: row[name] for name in _EVENT_FIELDS}))
        return found

    def events_for(self, conn: Connection, tenant_id: str, env: str,
                   subject_id: str) -> list[DatasetEvent]:
        rows = conn.execute(select(events).where(
            events.c.tenant_id == tenant_id, events.c.env == env,
            events.c.subject_id == subject_id).order_by(events.c.id)).mappings()
        return [DatasetEvent.model_validate(dict(r)) for r in rows]
