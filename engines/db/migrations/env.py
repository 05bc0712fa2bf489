"""Alembic environment: uses the connection handed over by engines.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

connection = context.config.attributes.get("connection")


def run(conn: Connection) -> None:
    # one transaction per migration: 0008 steps out of it for CREATE INDEX CONCURRENTLY
    context.configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite",
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).begin() as own:
        run(own)
