"""One index per URI column on PostgreSQL: the byte-order one.

0003 indexed each URI column for the reference model's exact lookups, and 0008
added a second index on it in byte order (`COLLATE "C"`) for gc's key ranges.
Equality is bytewise under any deterministic collation, so the byte-order index
serves the lookups too (`in_key_order`), and every insert, and every tombstone
(an update that changes an indexed column's predicate, so it writes every index),
wrote one index entry per URI column for nothing. SQLite has one index per
column already (its plain index is in byte order) and is left as it is.

Dropped `CONCURRENTLY` outside a transaction: writes go on while each drops.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PLAIN_INDEXES = (
    ("ix_canvas_artifacts_uri", "canvas_artifacts", "uri"),
    ("ix_media_v2_assets_source_uri", "media_v2_assets", "source_uri"),
    ("ix_media_v2_artifacts_uri", "media_v2_artifacts", "uri"),
)
"""(name, table, URI column): the indexes 0003 made, which the `_key` ones now replace."""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():
        for name, table, _column in PLAIN_INDEXES:
            op.drop_index(name, table_name=table, postgresql_concurrently=True,
                          if_exists=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():
        for name, table, column in PLAIN_INDEXES:
            op.create_index(name, table, [column], postgresql_concurrently=True,
                            if_not_exists=True)
