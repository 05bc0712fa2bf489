"""Engine construction: SQLite tuned for the embedded default, PostgreSQL pooled."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from engines.config import Settings

log = logging.getLogger("engines.db")
P = ParamSpec("P")
T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
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


class CommitOutcomeUnknown(Exception):
    """COMMIT was sent but its reply never came: the writes may or may not be durable.

    Such a transaction is resolved by reading what it wrote, never by running
    it again, and nothing it may have referenced is deleted meanwhile.
    """


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; a failure of the COMMIT itself raises CommitOutcomeUnknown.

    Any failure before COMMIT rolls back: nothing was written. SQLite writers
    are queued on a lock (`_SqliteWriters`): SQLite allows one writer at a
    time, and a writer that finds the database locked sleeps in SQLite's busy
    handler with growing back-off (up to 100 ms a nap), which made p99 spike
    under concurrent creates. The lock hands the write lock over at once.
    """
    lock = _sqlite_writers(engine.url.database or "") if engine.dialect.name == "sqlite" \
        else contextlib.nullcontext()
    with lock, engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(DBAPIError):
                transaction.rollback()
            raise
        try:
            transaction.commit()
        except DBAPIError as exc:
            raise CommitOutcomeUnknown(str(exc.orig or exc)) from exc


class _SqliteWriters:
    """The writers of one SQLite file: a thread lock within this process, then an
    `flock` on a file beside the database across processes.

    Waiting on `flock` wakes the moment the holder lets go, where SQLite's busy
    handler would sleep out its back-off: with two worker processes creating at
    once that sleep was the larger part of a create's time. Correctness never
    rests on it: SQLite's own locking still decides, the flock only hands the
    turn over (an in-memory database, or a lock file that cannot be made, goes
    without it).
    """

    def __init__(self, database: str) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:":
            with contextlib.suppress(OSError):
                self._fd = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


@functools.cache
def _sqlite_writers(database: str) -> _SqliteWriters:
    """One per database file, shared by every engine on it in this process."""
    return _SqliteWriters(database)


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
