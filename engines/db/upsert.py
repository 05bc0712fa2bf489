"""INSERT ... ON CONFLICT DO NOTHING for the dialects we run on."""

from __future__ import annotations

from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table) -> Insert:
    """An insert that silently keeps the existing row on a key conflict."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()
