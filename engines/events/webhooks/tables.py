"""The webhook tables: subscriptions, one delivery row per (subscription, event), attempts.

A delivery row is the durable state of getting one event to one endpoint:
any process may claim it, a process killed mid-POST leaves a lease that
expires, and the attempts table keeps what each try answered.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table

from engines.db.metadata import JsonDoc, UtcDateTime, metadata

subscriptions = Table(
    "webhook_subscriptions", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("events", JsonDoc, nullable=False),
    Column("canvas_id", String(128)),
    Column("secret", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("disabled_reason", String(1024)),
    Column("consecutive_failures", Integer, nullable=False),
    Column("cursor_seq", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_webhook_subscriptions_scope", "tenant_id", "env", "id"),
    Index("ix_webhook_subscriptions_status", "status", "tenant_id", "env"),
)

deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(64), primary_key=True),
    Column("subscription_id", String(64),
           ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ux_webhook_deliveries_event", "subscription_id", "event_id", unique=True),
    Index("ix_webhook_deliveries_order", "subscription_id", "status", "seq"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_scope", "tenant_id", "env", "id"),
)

attempts = Table(
    "webhook_attempts", metadata,
    Column("id", String(64), primary_key=True),
    Column("delivery_id", String(64),
           ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("subscription_id", String(64),
           ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("error", String(1024)),
    Column("started_at", UtcDateTime, nullable=False),
    Index("ix_webhook_attempts_subscription", "subscription_id", "id"),
    Index("ix_webhook_attempts_delivery", "delivery_id"),
)
