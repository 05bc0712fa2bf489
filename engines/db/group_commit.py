"""Group commit for SQLite: the creates queued at one moment share one transaction.

SQLite takes one writer at a time, and under concurrent creates most of a
create's time went to waiting for that write lock (the process's queue, then
SQLite's busy handler against the other worker processes) and to BEGIN and
COMMIT themselves. Here one writer thread per database takes whatever units
are queued, runs them in one transaction and commits once; if one unit
fails, the batch is rolled back and every unit runs again on its own, so a
failure stays its unit's alone. Callers still learn their own outcome only
after the COMMIT, so a 201 is never answered for rows that were not durable.

The thread exits after `IDLE_SECONDS` without work and is started again by
the next unit, so an engine that stops writing holds no thread or connection.
PostgreSQL takes concurrent writers itself and does not go through here.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from engines.db.engine import CommitOutcomeUnknown, write_transaction

T = TypeVar("T")

MAX_BATCH = 64
"""Units per transaction at most: bounds how long one COMMIT makes the others wait."""
IDLE_SECONDS = 2.0

Unit = tuple[Callable[[Connection], Any], Future]


class GroupCommitter:
    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._queue: queue.SimpleQueue[Unit] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, work: Callable[[Connection], T]) -> Future[T]:
        """Queue work(conn) for the next shared transaction; its future is resolved
        once that transaction committed (or failed)."""
        future: Future[T] = Future()
        self._queue.put((work, future))
        with self._lock:
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
                with self._lock:
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
            batch = [unit for unit in batch if unit[1].set_running_or_notify_cancel()]
            if not batch:
                continue
            engine = self._engine()
            if engine is None:
                for _work, future in batch:
                    future.set_exception(RuntimeError("the database engine was disposed"))
                continue
            try:
                _commit_batch(engine, batch)
            except BaseException as exc:  # noqa: BLE001 - the writer must outlive any unit
                # nobody may wait forever: whatever a unit raised that escaped the batch
                # (not an Exception) still answers every caller not yet answered
                for _work, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            del engine


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with write_transaction(engine) as conn:
        return work(conn)


def _commit_batch(engine: Engine, batch: list[Unit]) -> None:
    """One transaction for the batch; every future is resolved after its COMMIT.

    The units run back to back with no savepoint between them (a SAVEPOINT and
    RELEASE per unit doubled the statements, each a GIL round trip). If a unit
    fails, the whole transaction rolls back and each unit runs again in a
    transaction of its own, so a failure stays its unit's alone.
    """
    results: list[Any] = []
    try:
        with write_transaction(engine) as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            for work, _future in batch:
                results.append(work(conn))
    except CommitOutcomeUnknown as exc:
        for _work, future in batch:  # the rows may be durable: only a read can tell
            future.set_exception(exc)
        return
    except Exception as exc:  # noqa: BLE001 - rolled back: run each unit on its own
        if len(batch) == 1:
            batch[0][1].set_exception(exc)
            return
        for unit in batch:
            _run_alone(engine, unit)
        return
    for (_work, future), result in zip(batch, results, strict=True):
        future.set_result(result)


def _run_alone(engine: Engine, unit: Unit) -> None:
    work, future = unit
    try:
        result = _in_transaction(engine, work)
    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
        future.set_exception(exc)
        return
    future.set_result(result)


_committers: weakref.WeakKeyDictionary[Engine, GroupCommitter] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


async def run_write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """work(conn) in one committed transaction: grouped with others on SQLite.

    Returns work's result once committed. Raises what work raised (nothing of
    it kept), CommitOutcomeUnknown when the COMMIT was sent and its reply
    lost, or the error that failed the transaction. On SQLite the caller waits
    on the writer thread's future without holding a worker thread of its own.
    Like a worker-thread call, the wait is not cancelled halfway: a caller
    always learns the outcome of the write it started.
    """
    if engine.dialect.name != "sqlite":
        return await run_in_threadpool(_in_transaction, engine, work)
    with _committers_lock:
        committer = _committers.get(engine)
        if committer is None:
            committer = _committers[engine] = GroupCommitter(engine)
    with anyio.CancelScope(shield=True):
        return await asyncio.wrap_future(committer.submit(work))
