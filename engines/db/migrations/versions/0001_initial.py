"""Initial schema: media_v2, Nexus, canvas artifacts, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _scope() -> list[sa.Column]:
    return [sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("env", sa.String(16), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "media_v2_assets",
        sa.Column("id", sa.String(64), primary_key=True), *_scope(),
        sa.Column("user_id", sa.String(128)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_uri", sa.String(2048), nullable=False),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("source_ref", sa.String(256)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("meta", JSON, nullable=False),
    )
    op.create_index("ix_media_v2_assets_scope", "media_v2_assets", ["tenant_id", "env", "id"])
    op.create_table(
        "media_v2_artifacts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("parent_asset_id", sa.String(64), sa.ForeignKey("media_v2_assets.id"),
                  nullable=False),
        *_scope(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=False),
        sa.Column("start_ms", sa.BigInteger),
        sa.Column("end_ms", sa.BigInteger),
        sa.Column("track_label", sa.String(128)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("meta", JSON, nullable=False),
    )
    op.create_index("ix_media_v2_artifacts_parent", "media_v2_artifacts",
                    ["parent_asset_id", "id"])
    for table, extra in (("nexus_documents", sa.Column("kind", sa.String(32), nullable=False)),
                         ("dataset_events",
                          sa.Column("event_type", sa.String(64), nullable=False))):
        columns = [sa.Column("id", sa.String(64), primary_key=True), *_scope(), extra,
                   sa.Column("subject_id", sa.String(64), nullable=False)]
        if table == "dataset_events":
            columns.append(sa.Column("document_id", sa.String(64), nullable=False))
        op.create_table(table, *columns, sa.Column("lineage", JSON, nullable=False),
                        sa.Column("created_at", TS, nullable=False))
        op.create_index(f"ix_{table}_subject", table, ["tenant_id", "env", "subject_id"])
    op.create_table(
        "canvas_artifacts",
        sa.Column("id", sa.String(64), primary_key=True), *_scope(),
        sa.Column("canvas_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("workspace_id", sa.String(128)),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("surface_id", sa.String(128)),
        sa.Column("app_id", sa.String(128)),
        sa.Column("actor_id", sa.String(256), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=False),
        sa.Column("mime_type", sa.String(128)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("media_asset_id", sa.String(64), nullable=False),
        sa.Column("media_artifact_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("meta", JSON, nullable=False),
    )
    scope = ["tenant_id", "env", "canvas_id"]
    op.create_index("ix_canvas_artifacts_list", "canvas_artifacts", [*scope, "id"])
    op.create_index("ix_canvas_artifacts_kind", "canvas_artifacts", [*scope, "kind", "id"])
    op.create_index("ix_canvas_artifacts_latest", "canvas_artifacts",
                    [*scope, "kind", "rev", "id"])
    op.create_index("ix_canvas_artifacts_rev", "canvas_artifacts", [*scope, "rev", "id"])
    op.create_index("ix_canvas_artifacts_uri", "canvas_artifacts", ["uri"])
    op.create_table(
        "idempotency_keys",
        *_scope(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "env", "key"),
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "canvas_artifacts", "dataset_events", "nexus_documents",
                  "media_v2_artifacts", "media_v2_assets"):
        op.drop_table(table)
