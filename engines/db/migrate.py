"""Alembic, driven from code: `engines migrate` and auto-migrate on start."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from engines.db.writer import write_transaction

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


MIGRATION_LOCK_ID = 0x656E67696E6573  # "engines": any constant shared by all replicas


def upgrade(engine: Engine) -> None:
    """Bring the schema to head, on the given engine's connection.

    On PostgreSQL a session advisory lock serialises replicas that start at
    once with AUTO_MIGRATE on: the second waits, then finds the schema at head
    and does nothing. It is a session lock, not a transaction's, because
    Alembic runs each migration in its own transaction and steps out of it for
    `CREATE INDEX CONCURRENTLY` (0005). On SQLite the whole upgrade is one
    transaction, and its write lock does the same.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name != "postgresql":
        with write_transaction(engine) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        conn.commit()
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            conn.commit()


@functools.cache
def head_revision() -> str:
    """The revision this code expects; read from the migration scripts once per process."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None for a database Alembic never touched."""
    return MigrationContext.configure(conn).get_current_revision()


def pending(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision): equal when fully migrated."""
    with engine.connect() as conn:
        return current_revision(conn), head_revision()


def schema_problem(current: str | None, head: str) -> str | None:
    """What is wrong with a schema at `current` for code expecting `head`, in plain words."""
    if current == head:
        return None
    if current is None:
        return f"empty database, no schema, expected {head}"
    return f"schema at {current}, expected {head}"
