"""The SQLAlchemy MetaData every domain's tables register on.

Alembic migrations are the source of truth for the schema; these Table
objects describe the same columns for the repositories' queries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Index,
    MetaData,
    Table,
    TypeDecorator,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[object]):
    """Timezone-aware datetimes on every backend (SQLite drops the tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:

        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def key_order_indexes(name: str, column: str) -> tuple[Index, Index]:
    """`column`'s one index, in byte order (the order object stores list keys in): it
    serves the exact URI lookups of the reference model and gc's key ranges alike.

    PostgreSQL: `{name}_key`, `COLLATE "C"` whatever the database's collation (its
    equality is bytewise under any deterministic collation, so `in_key_order` serves
    lookups too). SQLite compares bytes already: its plain index `{name}`."""
    # the collation rides in postgresql_ops (rendered right after the column), because
    # reflection reports an index on the plain column, which is what it compares against
    return (Index(name, column).ddl_if(dialect="sqlite"),
            Index(f"{name}_key", column, postgresql_ops={column: 'COLLATE "C"'}).ddl_if(
                dialect="postgresql"))


def in_key_order(column: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """The column compared and sorted in byte order: what `key_order_indexes` serve."""
    return column.collate("C") if dialect == "postgresql" else column


def row_exists(conn: Connection, table: Table, row_id: str) -> bool:
    """Whether a row with this id is committed (how a lost COMMIT reply is resolved)."""
    return conn.execute(select(table.c.id).where(table.c.id == row_id)).first() is not None
