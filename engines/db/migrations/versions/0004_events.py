"""Events: a per-(tenant, env) `seq` on dataset_events, its counters, webhook tables.

Existing events are numbered in creation order, so a feed over an old
database starts complete.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _scope() -> list[sa.Column]:
    return [sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("env", sa.String(16), nullable=False)]


def _number_existing_events() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, tenant_id, env FROM dataset_events ORDER BY tenant_id, env, created_at, id"))
    counters: dict[tuple[str, str], int] = {}
    updates = []
    for event_id, tenant_id, env in rows:
        seq = counters.get((tenant_id, env), 0) + 1
        counters[(tenant_id, env)] = seq
        updates.append({"id": event_id, "seq": seq})
    if updates:
        conn.execute(sa.text("UPDATE dataset_events SET seq = :seq WHERE id = :id"), updates)
        conn.execute(sa.text("INSERT INTO event_sequences (tenant_id, env, last_seq) "
                             "VALUES (:tenant_id, :env, :last_seq)"),
                     [{"tenant_id": t, "env": e, "last_seq": n} for (t, e), n in counters.items()])


def upgrade() -> None:
    with op.batch_alter_table("dataset_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger))
    op.create_table("event_sequences", *_scope(),
                    sa.Column("last_seq", sa.BigInteger, nullable=False),
                    sa.PrimaryKeyConstraint("tenant_id", "env"))
    _number_existing_events()
    op.create_index("ux_dataset_events_seq", "dataset_events", ["tenant_id", "env", "seq"],
                    unique=True)

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(64), primary_key=True), *_scope(),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("canvas_id", sa.String(128)),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(1024)),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("cursor_seq", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_webhook_subscriptions_scope", "webhook_subscriptions",
                    ["tenant_id", "env", "id"])
    op.create_index("ix_webhook_subscriptions_status", "webhook_subscriptions",
                    ["status", "tenant_id", "env"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("subscription_id", sa.String(64),
                  sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
        *_scope(),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_until", TS),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ux_webhook_deliveries_event", "webhook_deliveries",
                    ["subscription_id", "event_id"], unique=True)
    op.create_index("ix_webhook_deliveries_order", "webhook_deliveries",
                    ["subscription_id", "status", "seq"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("delivery_id", sa.String(64),
                  sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subscription_id", sa.String(64),
                  sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("error", sa.String(1024)),
        sa.Column("started_at", TS, nullable=False),
    )
    op.create_index("ix_webhook_attempts_subscription", "webhook_attempts",
                    ["subscription_id", "id"])


def downgrade() -> None:
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_subscriptions",
                  "event_sequences"):
        op.drop_table(table)
    op.drop_index("ux_dataset_events_seq", table_name="dataset_events")
    with op.batch_alter_table("dataset_events") as batch:
        batch.drop_column("seq")
