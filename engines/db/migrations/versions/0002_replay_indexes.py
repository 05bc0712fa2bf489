"""Replay segment indexes, so window fetches read only what they return.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replay_indexes",
        sa.Column("artifact_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("env", sa.String(16), nullable=False),
        sa.Column("segments", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replay_indexes")
