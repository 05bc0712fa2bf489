"""Who may open another SSE stream: SSE_MAX_STREAMS per process, and
SSE_MAX_STREAMS_PER_TENANT per tenant across every process on the database.

A tenant's limit is `n` numbered slots. A stream takes the first slot no one
holds, as a lock that the holder's death releases by itself, so a killed
worker never leaks a slot:

- PostgreSQL: a session-level advisory lock, on one connection per process
  kept for this (every node on the database shares the count);
- SQLite: an `fcntl` byte-range lock on a file beside the database (every
  process on that file shares it);
- an in-memory database: counted in this process only.

Both kinds of lock are re-entrant for their holder, so the process also
remembers which slots it holds and never takes one of them twice.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from engines.config import Settings
from engines.db.engine import libpq_conninfo
from engines.http.errors import ServiceUnavailable, TooManyRequests
from engines.http.fair_share import RETRY_AFTER_SECONDS, ProcessSlots, Release

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("engines.events")
_CODE = "events.too_many_streams"


def slot_key(tenant_id: str, slot: int) -> int:
    """A tenant's slot as a 62-bit number: a PostgreSQL bigint and a valid file offset."""
    digest = hashlib.blake2b(f"engines/sse/{tenant_id}/{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 2


class SlotLocks(abc.ABC):
    """Locks on slot keys that other processes see; `held` are this process's."""

    def __init__(self) -> None:
        self.held: set[int] = set()

    async def take(self, tenant_id: str, limit: int) -> int | None:
        """The key of a free slot of the tenant, now held; None when all `limit` are taken."""
        for slot in range(limit):
            key = slot_key(tenant_id, slot)
            if key not in self.held and await self._try_lock(key):
                self.held.add(key)
                return key
        return None

    async def give_back(self, key: int) -> None:
        self.held.discard(key)
        await self._unlock(key)

    async def close(self) -> None:
        """Let go of what holds the locks (a database session); a lock file stays open."""
        return None

    @abc.abstractmethod
    async def _try_lock(self, key: int) -> bool: ...

    @abc.abstractmethod
    async def _unlock(self, key: int) -> None: ...


class LocalLocks(SlotLocks):
    """No other process shares the database: what this process holds is all there is."""

    async def _try_lock(self, key: int) -> bool:
        return True

    async def _unlock(self, key: int) -> None:
        return None


class FileLocks(SlotLocks):
    """One byte per slot key of `{database}-streams`, locked with `fcntl` (never blocks).

    One per file and process (`file_locks`): `fcntl` locks belong to the process, and
    closing any descriptor of the file would drop all of them.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    async def _try_lock(self, key: int) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        except OSError:
            return False
        return True

    async def _unlock(self, key: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, key)


class AdvisoryLocks(SlotLocks):
    """Session advisory locks on one autocommit connection of this process.

    The connection opens on the first stream. If it drops, the server has let
    go of its locks: the next use reconnects and takes back the slots still held.
    """

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self.conninfo = conninfo
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def take(self, tenant_id: str, limit: int) -> int | None:
        # one at a time: the session's locks are re-entrant, so two takes interleaved
        # at their awaits would both get the same slot
        async with self._lock:
            return await super().take(tenant_id, limit)

    async def give_back(self, key: int) -> None:
        async with self._lock:
            await super().give_back(key)

    async def _run(self, sql: str, key: int) -> bool:
        import psycopg

        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=5)
                for held in self.held:
                    await conn.execute("SELECT pg_try_advisory_lock(%s)", (held,))
                self._conn = conn
            row = await (await conn.execute(sql, (key,))).fetchone()
        except psycopg.Error as exc:
            log.warning("events: stream slot connection failed: %s", exc)
            await self.close()
            raise ServiceUnavailable("the metadata store is unavailable; retry later",
                                     code="metadata.unavailable") from exc
        return bool(row and row[0])

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _try_lock(self, key: int) -> bool:
        return await self._run("SELECT pg_try_advisory_lock(%s)", key)

    async def _unlock(self, key: int) -> None:
        with contextlib.suppress(ServiceUnavailable):  # a dropped session released it already
            await self._run("SELECT pg_advisory_unlock(%s)", key)


@functools.cache
def file_locks(path: str) -> FileLocks:
    return FileLocks(path)


def slot_locks(engine: Engine) -> SlotLocks:
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(libpq_conninfo(engine))
    database = engine.url.database or ""
    if database and database != ":memory:":
        return file_locks(f"{database}-streams")
    return LocalLocks()


class StreamSlots:
    """Admission of SSE streams: the process cap first (no I/O), then the tenant's."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.per_tenant = settings.sse_max_streams_per_tenant
        self.process = ProcessSlots(settings.sse_max_streams, code=_CODE, what="event streams")
        self.engine = engine
        self._locks: SlotLocks | None = None

    @property
    def locks(self) -> SlotLocks:
        """Made on first use, in the worker: a lock file or connection is per process."""
        if self._locks is None:
            self._locks = slot_locks(self.engine)
        return self._locks

    async def close(self) -> None:
        if self._locks is not None:
            await self._locks.close()

    async def take(self, tenant_id: str) -> Release:
        """A stream slot of this process and of the tenant, or 429 (503 on an outage)."""
        give_back_process = self.process.take()
        try:
            key = await self.locks.take(tenant_id, self.per_tenant)
        except BaseException:
            await give_back_process()
            raise
        if key is None:
            await give_back_process()
            raise TooManyRequests(
                f"tenant {tenant_id} holds its limit of {self.per_tenant} event streams; close "
                f"one or retry after {RETRY_AFTER_SECONDS} s", code=_CODE,
                retry_after=RETRY_AFTER_SECONDS)
        locks = self.locks

        async def give_back() -> None:
            try:
                await locks.give_back(key)
            finally:
                await give_back_process()

        return give_back
