"""The SQLAlchemy MetaData every domain's tables register on.

Alembic migrations are the source of truth for the schema; these Table
objects describe the same columns for the repositories' queries.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import JSON, Connection, DateTime, MetaData, Table, TypeDecorator, select
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[object]):
    """Timezone-aware datetimes on every backend (SQLite drops the tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):

        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def row_exists(conn: Connection, table: Table, row_id: str) -> bool:
    """Whether a row with this id is committed (how a lost COMMIT reply is resolved)."""
    return conn.execute(select(table.c.id).where(table.c.id == row_id)).first() is not None
