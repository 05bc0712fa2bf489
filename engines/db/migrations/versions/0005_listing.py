"""Listing across canvases: (tenant_id, env, id) and (tenant_id, env, kind, id) indexes.

`GET /artifacts` pages a whole tenant/env newest first, with or without a
kind: without these it would scan every canvas's rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_canvas_artifacts_scope", "canvas_artifacts",
                    ["tenant_id", "env", "id"])
    op.create_index("ix_canvas_artifacts_scope_kind", "canvas_artifacts",
                    ["tenant_id", "env", "kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_canvas_artifacts_scope_kind", table_name="canvas_artifacts")
    op.drop_index("ix_canvas_artifacts_scope", table_name="canvas_artifacts")
