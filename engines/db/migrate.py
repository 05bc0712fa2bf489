"""Alembic, driven from code: `engines migrate` and auto-migrate on start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

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
        with engine.begin() as conn:
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


def pending(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision): equal when fully migrated."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""
