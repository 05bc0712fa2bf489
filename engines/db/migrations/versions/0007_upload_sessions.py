"""Upload sessions: a preview sent in parts (presigned S3 parts, or parts on the service).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("env", sa.String(16), nullable=False),
        sa.Column("canvas_id", sa.String(128), nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(256), nullable=False),
        sa.Column("mime_type", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("artifact_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("upload_id", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("claimed_at", TS),
    )
    op.create_index("ix_upload_sessions_scope", "upload_sessions",
                    ["tenant_id", "env", "canvas_id", "id"])
    op.create_index("ix_upload_sessions_expiry", "upload_sessions", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("upload_sessions")
