"""Every database write: one transaction, and on SQLite one writer per database file.

SQLite takes one writer at a time. A writer that finds the database locked
sleeps in SQLite's busy handler with growing back-off (up to 100 ms a nap),
which made p99 spike under concurrent creates. So each SQLite file has one
`SqliteWriter` in this process, and every write takes its turn there:

- its thread lock queues this process's writers, and an `flock` on a file
  beside the database queues the other processes'. Waiting on `flock` wakes
  the moment the holder lets go, where the busy handler would sleep out its
  back-off. Correctness never rests on it: SQLite's own locking still decides,
  the turn only hands the write lock over (an in-memory database, or a lock
  file that cannot be made, goes without the flock);
- its group-commit queue (`run_write`, the create path): one writer thread
  takes whatever units are queued, runs them in one transaction and commits
  once. If one unit fails, the batch is rolled back and every unit runs again
  on its own, so a failure stays its unit's alone. Callers learn their own
  outcome only after the COMMIT, so a 201 is never answered for rows that were
  not durable. The thread exits after `IDLE_SECONDS` without work and is
  started again by the next unit, so a file nobody writes holds no thread or
  connection;
- inside a batch, the rows the create path writes (`defer_insert`, and the
  parts other modules add with `deferred`: usage counters, event seqs) are
  not sent one statement per unit: each statement's rows go as one
  `executemany` when the batch is flushed, before its COMMIT. A unit that
  runs a statement of its own first flushes everything queued before it, so
  every statement still sees every write queued before it (read-your-writes
  holds within a unit and across the units of a batch). A flush that fails
  fails the batch, which then runs unit by unit with nothing deferred.

Synchronous writes use `write_transaction`, async request paths `run_write`;
both take the same writer's turn. PostgreSQL takes concurrent writers itself:
there both are plain transactions.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import functools
import os
import queue
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar, cast

import anyio
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
P = TypeVar("P", bound="Part")

MAX_BATCH = 64
"""Units per transaction at most: bounds how long one COMMIT makes the others wait."""
IDLE_SECONDS = 2.0

Unit = tuple[Engine, Callable[[Connection], Any], Future]


class CommitOutcomeUnknown(Exception):
    """COMMIT was sent but its reply never came: the writes may or may not be durable.

    Such a transaction is resolved by reading what it wrote, never by running
    it again, and nothing it may have referenced is deleted meanwhile.
    """


class Part(abc.ABC):
    """Writes of one kind queued in a batch, sent at once by `flush` (a module's own
    aggregate: usage deltas summed per counter, events numbered per feed)."""

    @abc.abstractmethod
    def flush(self, conn: Connection) -> None: ...


class _Inserts(Part):
    """Rows per insert statement, in the order each statement was first queued."""

    def __init__(self) -> None:
        self.rows: dict[Executable, list[dict[str, Any]]] = {}

    def flush(self, conn: Connection) -> None:
        rows, self.rows = self.rows, {}
        for statement, params in rows.items():
            conn.execute(statement, params)


class Deferred:
    """What a batch's units queued and not yet sent; `memo` holds facts a unit read that
    stay true for the whole transaction (this file has one writer meanwhile)."""

    def __init__(self) -> None:
        self.memo: dict[Hashable, Any] = {}
        self._parts: dict[Hashable, Part] = {}
        self._inserts = self.part("inserts", _Inserts)
        self._flushing = False

    def part(self, key: Hashable, make: Callable[[], P]) -> P:
        """The batch's part under `key`, made on first use; parts flush in that order."""
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = make()
        return cast(P, part)  # a key is always made by the same `make`

    def insert(self, statement: Executable, params: dict[str, Any]) -> None:
        self._inserts.rows.setdefault(statement, []).append(params)

    def flush(self, conn: Connection) -> None:
        if self._flushing:
            return  # the flush's own statements
        self._flushing = True
        try:
            for part in self._parts.values():
                part.flush(conn)
        finally:
            self._flushing = False

    def _before_execute(self, conn: Connection, *_args: Any) -> None:
        self.flush(conn)


_DEFERRED = "engines.deferred"


def deferred(conn: Connection) -> Deferred | None:
    """The queue of the group-commit batch running on `conn`; None outside one (a
    synchronous write, PostgreSQL, a unit run again alone): then write at once."""
    return conn.info.get(_DEFERRED)


def defer_insert(conn: Connection, statement: Executable, params: dict[str, Any]) -> None:
    """Insert one row: in a batch, with the other units' rows of the same statement."""
    queue_ = deferred(conn)
    if queue_ is None:
        conn.execute(statement, params)
    else:
        queue_.insert(statement, params)


@contextlib.contextmanager
def _deferring(conn: Connection) -> Iterator[Deferred]:
    queue_ = Deferred()
    conn.info[_DEFERRED] = queue_
    event.listen(conn, "before_execute", queue_._before_execute)
    try:
        yield queue_
        queue_.flush(conn)
    finally:
        event.remove(conn, "before_execute", queue_._before_execute)
        del conn.info[_DEFERRED]


@contextlib.contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; a failure of the COMMIT itself raises CommitOutcomeUnknown.

    Any failure before COMMIT rolls back: nothing was written.
    """
    with engine.connect() as conn:
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


class SqliteWriter:
    """The one writer of a SQLite file in this process: thread lock, flock, commit queue."""

    def __init__(self, database: str) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:":
            with contextlib.suppress(OSError):
                self._fd = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
        self._queue: queue.SimpleQueue[Unit] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._running = False

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """The write turn of this file: this process's threads, then the other processes."""
        with self._threads:
            if self._fd is None:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def transaction(self, engine: Engine) -> Iterator[Connection]:
        with self.turn(), _transaction(engine) as conn:
            yield conn

    def submit(self, engine: Engine, work: Callable[[Connection], T]) -> Future[T]:
        """Queue work(conn) for the next shared transaction; its future is resolved
        once that transaction committed (or failed)."""
        future: Future[T] = Future()
        self._queue.put((engine, work, future))
        with self._state:
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name="engines-group-commit",
                                 daemon=True).start()
        return future

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._state:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # a unit whose caller is gone before it ran is dropped; once running, it is not
            self._serve([unit for unit in batch if unit[2].set_running_or_notify_cancel()])
            del first, batch  # an idle writer keeps no engine alive

    def _serve(self, batch: list[Unit]) -> None:
        """One transaction per engine among the units (engines on one file share the turn)."""
        by_engine: dict[Engine, list[Unit]] = {}
        for unit in batch:
            by_engine.setdefault(unit[0], []).append(unit)
        for engine, units in by_engine.items():
            try:
                self._commit_batch(engine, units)
            except BaseException as exc:  # noqa: BLE001 - the writer must outlive any unit
                # nobody may wait forever: whatever a unit raised that escaped the batch
                # (not an Exception) still answers every caller not yet answered
                for _engine, _work, future in units:
                    if not future.done():
                        future.set_exception(exc)

    def _commit_batch(self, engine: Engine, batch: list[Unit]) -> None:
        """One transaction for the batch; every future is resolved after its COMMIT.

        The units run back to back with no savepoint between them (a SAVEPOINT
        and RELEASE per unit doubled the statements, each a GIL round trip). If
        a unit fails, the whole transaction rolls back and each unit runs again
        in a transaction of its own, so a failure stays its unit's alone.
        """
        results: list[Any] = []
        try:
            with self.transaction(engine) as conn, _deferring(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                for _engine, work, _future in batch:
                    results.append(work(conn))
        except CommitOutcomeUnknown as exc:
            for _engine, _work, future in batch:  # the rows may be durable: only a read can tell
                future.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - rolled back: run each unit on its own
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
                return
            for unit in batch:
                self._run_alone(unit)
            return
        for (_engine, _work, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _run_alone(self, unit: Unit) -> None:
        engine, work, future = unit
        try:
            with self.transaction(engine) as conn:
                result = work(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
            future.set_exception(exc)
            return
        future.set_result(result)


_writers: dict[str, SqliteWriter] = {}
_writers_lock = threading.Lock()


@functools.cache
def _file_of(database: str) -> str:
    """One name per file, however the URL spells it (resolved once, not per write)."""
    return os.path.realpath(database) if database and database != ":memory:" else database


def sqlite_writer(engine: Engine) -> SqliteWriter | None:
    """The writer of the engine's SQLite file, shared by every engine on it in this
    process; None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    database = _file_of(engine.url.database or "")
    writer = _writers.get(database)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(database)
            if writer is None:
                writer = _writers[database] = SqliteWriter(database)
    return writer


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction, in the writer's turn on SQLite; a failure of the COMMIT itself
    raises CommitOutcomeUnknown, any failure before it rolls back."""
    writer = sqlite_writer(engine)
    with writer.transaction(engine) if writer else _transaction(engine) as conn:
        yield conn


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with write_transaction(engine) as conn:
        return work(conn)


async def run_write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """work(conn) in one committed transaction: grouped with others on SQLite.

    Returns work's result once committed. Raises what work raised (nothing of
    it kept), CommitOutcomeUnknown when the COMMIT was sent and its reply
    lost, or the error that failed the transaction. On SQLite the caller waits
    on the writer thread's future without holding a worker thread of its own.
    Like a worker-thread call, the wait is not cancelled halfway: a caller
    always learns the outcome of the write it started.
    """
    writer = sqlite_writer(engine)
    if writer is None:
        return await run_in_threadpool(_in_transaction, engine, work)
    with anyio.CancelScope(shield=True):
        return await asyncio.wrap_future(writer.submit(engine, work))
