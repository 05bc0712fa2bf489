"""Engine construction: SQLite tuned for the embedded default, PostgreSQL pooled."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from engines.config import Settings

log = logging.getLogger("engines.db")
P = ParamSpec("P")
T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def retry_on_disconnect(fn: Callable[P, T]) -> Callable[P, T]:
    """Run a unit of database work; if the connection died under it, run it once more.

    A dead connection (server restart, failover, a killed backend) is
    invalidated by SQLAlchemy and the retry gets a fresh one from the pool.
    The work must be a whole transaction, so a retry repeats it from the
    start; a second failure propagates and becomes a 503. A coroutine
    function (a create's `write_once`) is retried the same way.
    """

    def lost(exc: DBAPIError) -> None:
        if not exc.connection_invalidated:
            raise exc
        log.warning("database connection lost in %s; retrying once", fn.__name__)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def once_more_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await fn(*args, **kwargs)
            except DBAPIError as exc:
                lost(exc)
            return await fn(*args, **kwargs)

        return cast(Callable[P, T], once_more_async)

    @functools.wraps(fn)
    def once_more(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except DBAPIError as exc:
            lost(exc)
        return fn(*args, **kwargs)

    return once_more


def libpq_conninfo(engine: Engine) -> str:
    """The engine's PostgreSQL URL as psycopg takes it, for the connections that live
    outside the pool (LISTEN, stream slots)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


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
