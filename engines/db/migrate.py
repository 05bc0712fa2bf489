"""Alembic, driven from code: `engines migrate` and auto-migrate on start.

Alembic (with Mako and Pygments, ~12 MiB a process) is imported only to migrate:
`/readyz`, in every served worker, compares revisions without it. The migration
scripts stay the one place the revisions are written; `head_revision` reads their
`revision` / `down_revision` assignments, and a test holds it to Alembic's own answer.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from engines.db.writer import write_transaction

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

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
    from alembic import command

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


def _assigned(path: Path) -> dict[str, object]:
    """A migration script's module-level `name = <literal>` assignments."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        continue
    return found


@functools.cache
def head_revision() -> str:
    """The revision this code expects: the one script no other revises. Read from the
    migration scripts once per process; one chain, so exactly one head."""
    scripts = [_assigned(path) for path in (MIGRATIONS / "versions").glob("*.py")]
    revisions = {str(s["revision"]) for s in scripts if "revision" in s}
    revised = {str(s["down_revision"]) for s in scripts if s.get("down_revision")}
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the migration scripts have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None for a database Alembic never touched."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


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
