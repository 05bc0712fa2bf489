"""Quotas per tenant: tenant_quotas (operator limits) and tenant_usage (counters).

The usage counters start from the live artifacts already stored, so a quota
set on an old database counts what is there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("env", sa.String(16), nullable=False),
        sa.Column("max_bytes", sa.BigInteger),
        sa.Column("max_artifacts", sa.BigInteger),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "env"),
    )
    op.create_table(
        "tenant_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("env", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("artifacts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "env", "kind"),
    )
    op.execute(
        "INSERT INTO tenant_usage (tenant_id, env, kind, bytes, artifacts) "
        "SELECT tenant_id, env, kind, COALESCE(SUM(size_bytes), 0), COUNT(*) "
        "FROM canvas_artifacts WHERE deleted_at IS NULL GROUP BY tenant_id, env, kind")


def downgrade() -> None:
    op.drop_table("tenant_usage")
    op.drop_table("tenant_quotas")
