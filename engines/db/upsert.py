"""INSERT ... ON CONFLICT (do nothing, or update) for the dialects we run on."""

from __future__ import annotations

from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table) -> Insert:
    """An insert that silently keeps the existing row on a key conflict."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def upsert(conn: Connection, table: Table, keys: list[str]) -> Insert:
    """An insert that overwrites the other columns of the row with the same keys."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(index_elements=keys, set_={
        c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys})
