"""Engine construction: SQLite tuned for the embedded default, PostgreSQL pooled."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from engines.config import Settings


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def build_engine(settings: Settings, url: str | None = None) -> Engine:
    """One engine per process; the pool is the only shared connection state."""
    target = make_url(url or settings.database_url)
    if target.get_backend_name() == "sqlite":
        if target.database and target.database != ":memory:":
            Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(target, connect_args={"check_same_thread": False, "timeout": 10},
                               pool_size=settings.db_pool_size,
                               max_overflow=settings.db_max_overflow)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        target,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 5,
            # a query that hangs (lock wait, sick server) fails as a 503, never blocks forever
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )
