"""Scale indexes: every query of the big jobs (retention, purge, gc) on an index.

- `ix_canvas_artifacts_expiry`: live artifacts of a (tenant, env, kind) by
  `created_at`, what retention counts and expires (partial: tombstones left
  behind by earlier batches are not walked again);
- `ix_*_uri_key` (PostgreSQL): the URI columns in byte order (`COLLATE "C"`),
  the order object stores list keys in, so gc walks a listing page and the
  database range behind it together; SQLite's default collation is already
  byte order, and its existing URI indexes serve;
- `(tenant_id, env, id)` on the tables that had no index starting with the
  tenant (media_v2 artifacts, replay indexes, webhook deliveries), so a purge
  deletes a tenant in key-ordered batches instead of scanning the table;
- `ix_webhook_attempts_delivery`: the ON DELETE CASCADE from deliveries.

On PostgreSQL every index is built `CONCURRENTLY` outside a transaction, so
a 10M-row table keeps taking writes while it builds (the lock is a SHARE
UPDATE EXCLUSIVE one: writes go on; only the brief start and end wait for
running transactions).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")

INDEXES: tuple[tuple[str, str, list[str], dict[str, object]], ...] = (
    ("ix_canvas_artifacts_expiry", "canvas_artifacts",
     ["tenant_id", "env", "kind", "created_at", "id"],
     {"postgresql_where": LIVE, "sqlite_where": LIVE}),
    ("ix_media_v2_artifacts_scope", "media_v2_artifacts", ["tenant_id", "env", "id"], {}),
    ("ix_replay_indexes_scope", "replay_indexes", ["tenant_id", "env", "artifact_id"], {}),
    ("ix_webhook_deliveries_scope", "webhook_deliveries", ["tenant_id", "env", "id"], {}),
    ("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id"], {}),
)
"""(name, table, columns, dialect options) on every backend."""

KEY_ORDER_INDEXES = (
    ("ix_canvas_artifacts_uri_key", "canvas_artifacts", "uri"),
    ("ix_media_v2_assets_source_uri_key", "media_v2_assets", "source_uri"),
    ("ix_media_v2_artifacts_uri_key", "media_v2_artifacts", "uri"),
)
"""PostgreSQL only: (name, table, URI column) indexed in byte order."""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, table, columns, options in INDEXES:
            op.create_index(name, table, columns, **options)
        return
    with op.get_context().autocommit_block():
        for name, table, columns, options in INDEXES:
            op.create_index(name, table, columns, postgresql_concurrently=True,
                            if_not_exists=True, **options)
        for name, table, column in KEY_ORDER_INDEXES:
            op.create_index(name, table, [column], postgresql_ops={column: 'COLLATE "C"'},
                            postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    names = [(name, table) for name, table, _c, _o in INDEXES]
    if not postgresql:
        for name, table in names:
            op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        for name, table in [*names, *((n, t) for n, t, _c in KEY_ORDER_INDEXES)]:
            op.drop_index(name, table_name=table, postgresql_concurrently=True,
                          if_exists=True)
