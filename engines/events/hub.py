"""One reader per process that wakes every subscriber: no thread or query per subscriber.

The hub keeps, per (tenant, env) that has subscribers, the last seq it has
read. When something may have changed it reads the new rows once and hands
them to every subscriber of that key. What says "something may have changed":

- PostgreSQL: `LISTEN engines_events` on one autocommit psycopg connection;
  writers NOTIFY in their transaction (delivered on commit) with the key.
- SQLite: one query of every key's counter each EVENTS_POLL_SECONDS.

A subscriber (`follow`) reads its backlog (seq > Last-Event-ID) from the rows
itself, and only then drains what the hub handed it, skipping anything at
or below the last seq it sent: it registers before it reads, so nothing can
fall between the backlog and the live part, and nothing is sent twice.
A subscriber that falls more than QUEUE_MAX events behind re-reads from the
rows instead of buffering without bound.

The same reader keeps the process's caches honest (engines/common/cache.py):
from the app's start (`follow_caches`) it keeps, per (tenant, env), the last
seq it checked, and when something may have been deleted (PostgreSQL: a
NOTIFY marked `drop`; SQLite: a counter that moved at a poll) it reads only
the deletions, expiries and purges past that seq and drops the cache entries
they name. So a deletion committed by any process is forgotten by every
process within the hub's wake-up latency: the NOTIFY round trip, or
EVENTS_POLL_SECONDS on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection, Engine

from engines.common.cache import CacheGroup
from engines.common.outage import OutageLog
from engines.config import Settings
from engines.db.engine import libpq_conninfo
from engines.events.feed import FeedEvent, Key, last_seq, last_seqs, read_after, read_drops
from engines.lineage.nexus.backends.sql import NOTIFY_CHANNEL, NOTIFY_DROP

log = logging.getLogger("engines.events")
T = TypeVar("T")
QUEUE_MAX = 1000
RETRY_SECONDS = 1.0
LISTEN_CHECK_SECONDS = 30.0


@dataclass(eq=False)
class Subscription:
    key: Key
    canvas_id: str | None
    pending: deque[FeedEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    baseline: int = 0
    """The feed's last seq when the subscriber registered: where a live stream starts."""

    def push(self, batch: list[FeedEvent]) -> None:
        if len(self.pending) + len(batch) > QUEUE_MAX:
            self.pending.clear()
            self.overflowed = True
        else:
            self.pending.extend(batch)
        self.wake.set()

    def wants(self, event: FeedEvent) -> bool:
        return self.canvas_id is None or event.canvas_id == self.canvas_id


class EventHub:
    """Per-process fan-out of the events feed; started lazily in the serving loop."""

    def __init__(self, engine: Engine, settings: Settings,
                 caches: CacheGroup | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.caches = caches
        self.subscribers: dict[Key, set[Subscription]] = {}
        self.cursors: dict[Key, int] = {}
        self._dirty: set[Key] = set()
        self._following = False
        self._cache_cursors: dict[Key, int] | None = None
        """Per key, the seq up to which deletions were dropped from the caches; None until
        the first look at the counters (what was deleted before it, no cache holds)."""
        self._caches_dirty: set[Key] = set()
        self._check_all = True
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _db(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    # ---- lifecycle --------------------------------------------------------

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._tasks:
            return
        self._loop, self._wake = loop, asyncio.Event()
        waker = self._listen if self.engine.dialect.name == "postgresql" else self._poll
        self._tasks = [loop.create_task(self._dispatch()), loop.create_task(waker())]

    async def follow_caches(self) -> None:
        """From now on, drop cache entries of whatever the feed says is gone. Called by the
        app's lifespan before the first request, so no entry predates the first look."""
        if self.caches is None:
            return
        self._following = True
        try:
            self._cache_cursors = await self._db(last_seqs)
        except Exception:  # noqa: BLE001 - the first look is retried by the dispatcher
            log.warning("events: could not read the feed counters; retrying")
        self.ensure_started()
        self.poke()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task

    # ---- subscribers ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscription(self, key: Key, canvas_id: str | None) -> AsyncIterator[Subscription]:
        """Register a subscriber; once entered, every later commit reaches it."""
        self.ensure_started()
        sub = Subscription(key, canvas_id)
        self.subscribers.setdefault(key, set()).add(sub)
        try:
            sub.baseline = await self._db(lambda conn: last_seq(conn, key))
            self.cursors.setdefault(key, sub.baseline)
            self.poke()
            yield sub
        finally:
            subs = self.subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.subscribers[key]
                    self.cursors.pop(key, None)

    async def follow(self, sub: Subscription,
                     after: int | None) -> AsyncIterator[FeedEvent | None]:
        """The subscriber's events in seq order (backlog past `after` first); None when a
        heartbeat is due."""
        cursor = sub.baseline if after is None else after
        replay = after is not None
        while True:
            sub.wake.clear()
            if replay or sub.overflowed:
                replay, sub.overflowed = False, False
                sub.pending.clear()
                more = True
                while more:
                    found, last, more = await self._db(
                        lambda conn, since=cursor: read_after(conn, sub.key, since))
                    for event in found:
                        if sub.wants(event):
                            yield event
                    cursor = max(cursor, last)
            while sub.pending:
                event = sub.pending.popleft()
                if event.seq > cursor:
                    cursor = event.seq
                    if sub.wants(event):
                        yield event
            if sub.overflowed:
                continue
            try:
                await asyncio.wait_for(sub.wake.wait(), self.settings.events_heartbeat_seconds)
            except TimeoutError:
                yield None

    def poke(self, key: Key | None = None) -> None:
        """Something may have changed for `key` (None: for any key)."""
        if key is None:
            self._check_all = True
        else:
            self._dirty.add(key)
        self._wake.set()

    # ---- the one reader ---------------------------------------------------

    async def _dispatch(self) -> None:
        outage = OutageLog(log, "events: reading new events")
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._read_new()
            except Exception as exc:  # noqa: BLE001 - a DB hiccup must not end the feed
                outage.failed(exc)
                self._check_all = True
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()
            else:
                outage.succeeded()

    async def _read_new(self) -> None:
        if self._check_all:
            self._check_all = False
            if self.subscribers or self._following:
                seqs = await self._db(last_seqs)
                self._dirty.update(key for key, cursor in self.cursors.items()
                                   if seqs.get(key, 0) > cursor)
                self._changed_for_caches(seqs)
        await self._drop_from_caches()
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            more = True
            while more and key in self.cursors:
                since = self.cursors[key]
                found, last, more = await self._db(
                    lambda conn, k=key, s=since: read_after(conn, k, s))
                if self.cursors.get(key) != since:
                    break  # the key lost its subscribers meanwhile
                self.cursors[key] = last
                for sub in self.subscribers.get(key, ()):
                    sub.push(found)

    def _changed_for_caches(self, seqs: dict[Key, int]) -> None:
        if not self._following:
            return
        if self._cache_cursors is None:
            self._cache_cursors = dict(seqs)
            return
        cursors = self._cache_cursors
        self._caches_dirty.update(key for key, seq in seqs.items() if seq > cursors.get(key, 0))

    async def _drop_from_caches(self) -> None:
        """Every artifact deleted or expired, and every scope purged, past each dirty key's
        cursor: dropped from the caches, then the cursor moves to the key's last seq."""
        dirty, self._caches_dirty = self._caches_dirty, set()
        if self.caches is None or self._cache_cursors is None:
            return
        for key in dirty:
            more = True
            while more:
                since = self._cache_cursors.get(key, 0)
                subjects, last, more = await self._db(
                    lambda conn, k=key, s=since: read_drops(conn, k, s, last_seq(conn, k)))
                for subject in subjects:
                    self.caches.drop(key, subject)
                self._cache_cursors[key] = last

    def _noticed(self, payload: str) -> None:
        """A NOTIFY: `{tenant} {env}`, plus ` drop` when caches must forget something."""
        tenant_id, _, rest = payload.partition(" ")
        env, _, flag = rest.partition(" ")
        key = (tenant_id, env)
        if key in self.cursors:
            self.poke(key)
        if flag == NOTIFY_DROP and self._following:
            self._caches_dirty.add(key)
            self._wake.set()

    async def _poll(self) -> None:
        """SQLite: one counters query per tick, while someone is subscribed or caches
        follow the feed."""
        while True:
            await asyncio.sleep(self.settings.events_poll_seconds)
            if self.subscribers or self._following:
                self.poke()

    async def _listen(self) -> None:
        """PostgreSQL: LISTEN on one connection; reconnects, then rechecks everything."""
        import psycopg

        conninfo = libpq_conninfo(self.engine)
        outage = OutageLog(log, "events: LISTEN connection")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        conninfo, autocommit=True, connect_timeout=5) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    outage.succeeded()
                    self.poke()  # anything committed while we were not listening
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK_SECONDS):
                            self._noticed(note.payload)
                        await conn.execute("SELECT 1")  # a silently dead link raises here
            except Exception as exc:  # noqa: BLE001 - keep listening through DB restarts
                outage.failed(exc)  # once when it starts, then a count a minute
                await asyncio.sleep(RETRY_SECONDS)
