"""The SQLAlchemy MetaData every domain's tables register on.

Alembic migrations are the source of truth for the schema; these Table
objects describe the same columns for the repositories' queries.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[object]):
    """Timezone-aware datetimes on every backend (SQLite drops the tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]

        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
