"""One reference model: tombstones, canonical root-relative URIs, upload leases, retention.

- `deleted_at` on canvas_artifacts and media_v2_artifacts: a deleted row is a
  tombstone that no longer keeps its blob alive;
- indexes on every URI column, so "is this key referenced?" is one lookup each;
- existing URIs rewritten in canonical form: local `file:///abs/root/tenants/...`
  becomes `local:tenants/...` (records no longer depend on where the media
  root is mounted) and s3 URIs lose doubled slashes and upper-case schemes;
- upload_leases, renewed by long uploads so gc never sweeps them mid-stream;
- retention_overrides, the per-tenant retention an operator sets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
URI_COLUMNS = (("canvas_artifacts", "uri"), ("media_v2_assets", "source_uri"),
               ("media_v2_artifacts", "uri"))
BATCH = 1000


def canonical(uri: str) -> str:
    """The stored form (see engines/storage/uris.py), for the URIs earlier versions wrote."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "file":
        path = unquote(urlsplit(uri).path)
        marker = path.find("/tenants/")
        return f"local:{path[marker + 1:]}" if marker >= 0 else uri
    if scheme.lower() == "s3" and "?" not in uri and "#" not in uri:
        parts = urlsplit(uri)
        key = parts.path.lstrip("/")
        if parts.netloc and key and "" not in key.split("/"):
            return f"s3://{parts.netloc}/{key}"
    return uri


def _rewrite(table: str, column: str) -> None:
    bind = op.get_bind()
    t = sa.table(table, sa.column("id", sa.String), sa.column(column, sa.String))
    last = ""
    while True:
        rows = bind.execute(sa.select(t.c.id, t.c[column]).where(t.c.id > last)
                            .order_by(t.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row_id, uri in rows:
            fixed = canonical(uri)
            if fixed != uri:
                bind.execute(t.update().where(t.c.id == row_id).values({column: fixed}))
        last = rows[-1][0]


def upgrade() -> None:
    op.add_column("canvas_artifacts", sa.Column("deleted_at", TS))
    op.add_column("media_v2_artifacts", sa.Column("deleted_at", TS))
    op.create_index("ix_media_v2_assets_source_uri", "media_v2_assets", ["source_uri"])
    op.create_index("ix_media_v2_artifacts_uri", "media_v2_artifacts", ["uri"])
    for table, column in URI_COLUMNS:
        _rewrite(table, column)
    op.create_table(
        "upload_leases",
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_table(
        "retention_overrides",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("env", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("keep_seconds", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "env", "kind"),
    )


def downgrade() -> None:
    op.drop_table("retention_overrides")
    op.drop_table("upload_leases")
    op.drop_index("ix_media_v2_artifacts_uri", "media_v2_artifacts")
    op.drop_index("ix_media_v2_assets_source_uri", "media_v2_assets")
    with op.batch_alter_table("media_v2_artifacts") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("canvas_artifacts") as batch:
        batch.drop_column("deleted_at")
