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

from engines.config import Settings
from engines.db.engine import libpq_conninfo
from engines.events.feed import FeedEvent, Key, last_seq, last_seqs, read_after
from engines.nexus.backends.sql import NOTIFY_CHANNEL

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

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.subscribers: dict[Key, set[Subscription]] = {}
        self.cursors: dict[Key, int] = {}
        self._dirty: set[Key] = set()
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
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._read_new()
            except Exception:  # noqa: BLE001 - a DB hiccup must not end the feed
                log.exception("events: reading new events failed; retrying")
                self._check_all = True
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _read_new(self) -> None:
        if self._check_all:
            self._check_all = False
            if self.subscribers:
                seqs = await self._db(last_seqs)
                self._dirty.update(key for key, cursor in self.cursors.items()
                                   if seqs.get(key, 0) > cursor)
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

    async def _poll(self) -> None:
        """SQLite: one counters query per tick, only while someone is subscribed."""
        while True:
            await asyncio.sleep(self.settings.events_poll_seconds)
            if self.subscribers:
                self.poke()

    async def _listen(self) -> None:
        """PostgreSQL: LISTEN on one connection; reconnects, then rechecks everything."""
        import psycopg

        conninfo = libpq_conninfo(self.engine)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        conninfo, autocommit=True, connect_timeout=5) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.poke()  # anything committed while we were not listening
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK_SECONDS):
                            tenant_id, _, env = note.payload.partition(" ")
                            if (tenant_id, env) in self.cursors:
                                self.poke((tenant_id, env))
                        await conn.execute("SELECT 1")  # a silently dead link raises here
            except Exception:  # noqa: BLE001 - keep listening through DB restarts
                log.warning("events: LISTEN connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
