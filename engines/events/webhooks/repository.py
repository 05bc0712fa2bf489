"""SQL for webhooks: subscriptions (tenant/env scoped), fan-out, claims and results.

Claiming is a compare-and-set from `pending` (due) or `delivering` (lease
run out) to `delivering` with a new lease, so a delivery is attempted by one
process at a time. On PostgreSQL the candidate rows are also read with
`FOR UPDATE SKIP LOCKED`, so processes claiming at once take different rows
instead of queueing on the same ones. Only the oldest unfinished delivery of
a subscription is claimable: each endpoint gets its events in seq order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from engines.db.upsert import insert_ignore
from engines.events.webhooks.tables import attempts, deliveries, subscriptions
from engines.lineage.nexus.backends.sql import event_sequences

ACTIVE, DISABLED = "active", "disabled"
PENDING, DELIVERING, SUCCEEDED, FAILED, DROPPED = (
    "pending", "delivering", "succeeded", "failed", "dropped")
UNFINISHED = (PENDING, DELIVERING)


def _scoped(tenant_id: str, env: str, subscription_id: str) -> Any:
    return and_(subscriptions.c.id == subscription_id, subscriptions.c.tenant_id == tenant_id,
                subscriptions.c.env == env)


def insert_subscription(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(subscriptions), row)


def list_subscriptions(conn: Connection, tenant_id: str, env: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(subscriptions).where(
        subscriptions.c.tenant_id == tenant_id, subscriptions.c.env == env)
        .order_by(subscriptions.c.id)).mappings()
    return [dict(r) for r in rows]


def get_subscription(conn: Connection, tenant_id: str, env: str,
                     subscription_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(subscriptions).where(
        _scoped(tenant_id, env, subscription_id))).mappings().first()
    return dict(row) if row is not None else None


def delete_subscription(conn: Connection, tenant_id: str, env: str,
                        subscription_id: str) -> bool:
    """Its deliveries and attempts go with it (ON DELETE CASCADE)."""
    return conn.execute(delete(subscriptions).where(
        _scoped(tenant_id, env, subscription_id))).rowcount == 1


def list_attempts(conn: Connection, subscription_id: str, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(attempts).where(attempts.c.subscription_id == subscription_id)
                        .order_by(attempts.c.id.desc()).limit(limit)).mappings()
    return [dict(r) for r in rows]


# ---- fan-out: events -> delivery rows ------------------------------------


def subscriptions_behind(conn: Connection) -> list[dict[str, Any]]:
    """Active subscriptions whose (tenant, env) has events past their cursor: one query."""
    rows = conn.execute(select(subscriptions).join(event_sequences, and_(
        event_sequences.c.tenant_id == subscriptions.c.tenant_id,
        event_sequences.c.env == subscriptions.c.env)).where(
        subscriptions.c.status == ACTIVE,
        event_sequences.c.last_seq > subscriptions.c.cursor_seq)).mappings()
    return [dict(r) for r in rows]


def lock_cursor(conn: Connection, subscription_id: str) -> int | None:
    """The subscription's cursor, row-locked on PostgreSQL (None: another process has it)."""
    stmt = select(subscriptions.c.cursor_seq).where(subscriptions.c.id == subscription_id,
                                                    subscriptions.c.status == ACTIVE)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    value = conn.execute(stmt).scalar()
    return None if value is None else int(value)


def add_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert_ignore(conn, deliveries), rows)


def move_cursor(conn: Connection, subscription_id: str, old: int, new: int) -> bool:
    return conn.execute(update(subscriptions).where(
        subscriptions.c.id == subscription_id, subscriptions.c.cursor_seq == old)
        .values(cursor_seq=new)).rowcount == 1


# ---- claims and results ---------------------------------------------------


def _claimable(now: datetime) -> Any:
    earlier = aliased(deliveries)
    return and_(
        subscriptions.c.status == ACTIVE,
        or_(and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == DELIVERING, deliveries.c.lease_until <= now)),
        ~exists().where(earlier.c.subscription_id == deliveries.c.subscription_id,
                        earlier.c.status.in_(UNFINISHED), earlier.c.seq < deliveries.c.seq),
    )


def claim(conn: Connection, now: datetime, lease_until: datetime,
          limit: int) -> list[dict[str, Any]]:
    """Take up to `limit` due deliveries (the head of each subscription) for this process."""
    stmt = (select(deliveries, subscriptions.c.url, subscriptions.c.secret)
            .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
            .where(_claimable(now)).order_by(deliveries.c.next_attempt_at).limit(limit))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=deliveries, skip_locked=True)
    claimed = []
    for row in conn.execute(stmt).mappings().all():
        taken = conn.execute(update(deliveries).where(
            deliveries.c.id == row["id"], deliveries.c.status == row["status"],
            deliveries.c.attempts == row["attempts"])
            .values(status=DELIVERING, attempts=row["attempts"] + 1,
                    lease_until=lease_until)).rowcount
        if taken == 1:
            claimed.append({**row, "attempts": row["attempts"] + 1})
    return claimed


def finish(conn: Connection, delivery: dict[str, Any], *, status: str,
           next_attempt_at: datetime | None = None) -> bool:
    """Record the outcome of our claim; False if the lease ran out and another took it."""
    values: dict[str, Any] = {"status": status, "lease_until": None}
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    return conn.execute(update(deliveries).where(
        deliveries.c.id == delivery["id"], deliveries.c.status == DELIVERING,
        deliveries.c.attempts == delivery["attempts"]).values(**values)).rowcount == 1


def add_attempt(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(attempts), row)


def record_success(conn: Connection, subscription_id: str) -> None:
    conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id,
                                             subscriptions.c.consecutive_failures != 0)
                 .values(consecutive_failures=0))


def record_failure(conn: Connection, subscription_id: str, disable_after: int,
                   error: str) -> None:
    """One more failed delivery in a row; at `disable_after` the subscription stops."""
    conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id)
                 .values(consecutive_failures=subscriptions.c.consecutive_failures + 1))
    conn.execute(update(subscriptions).where(
        subscriptions.c.id == subscription_id, subscriptions.c.status == ACTIVE,
        subscriptions.c.consecutive_failures >= disable_after).values(
        status=DISABLED,
        disabled_reason=f"disabled after {disable_after} consecutive failed deliveries; "
                        f"last error: {error}"[:1024]))
