"""One design for every in-process cache: bounded, time-limited, dropped by the event feed.

Process memory is an optimisation, never a source of truth (docs/caches.md). Each
cache here (artifact records, canvas assets, image variants, verified tokens):

- holds at most `max_entries`; a new entry past that evicts the oldest one;
- keeps an entry at most `ttl` seconds from the moment the read that filled it
  began (a caller may ask for less, as a token's own `exp`), so even a process
  that misses every invalidation answers from memory for `ttl` at most;
- files each entry under the (tenant, env) scope and, optionally, the subject
  (an artifact id) it was read for, so an invalidation drops exactly what it
  names: `drop(scope, subject)` for an artifact deleted or expired,
  `drop(scope)` for a purged scope. The events hub (engines/events/hub.py)
  calls them for every deletion, expiry and purge committed by any process;
- refuses an entry whose read began before the latest drop: a read that raced
  a deletion cannot put back what the deletion dropped.

Between a commit and the drop that follows it an entry can still be stale; the
callers make that harmless rather than rare. Where a cached entry meets the
truth (a foreign-key failure, a missing blob, a missing row) they drop it and
redo the work from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Scope = tuple[str, str]
"""(tenant_id, env): what a purge erases, and the prefix of every entry's name."""


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires: float
    scope: Scope | None
    subject: str | None


class Cache(Generic[K, V]):
    """Thread-safe (one lock, held for a few dict operations): filled from worker threads,
    read on the event loop."""

    def __init__(self, max_entries: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[K, _Entry[V]] = {}
        self._subjects: dict[tuple[Scope, str], set[K]] = {}
        self._dropped_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def now(self) -> float:
        """Take this before reading the truth: the entry's life counts from it."""
        return self.clock()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            self.discard(key)
            return None
        return entry.value

    def put(self, key: K, value: V, read_started: float, *, scope: Scope | None = None,
            subject: str | None = None, ttl: float | None = None) -> None:
        """Keep value until read_started + ttl (the cache's ttl at most); nothing is kept
        when a drop happened after the read began."""
        life = self.ttl if ttl is None else min(ttl, self.ttl)
        if not self.enabled or life <= 0:
            return
        with self._lock:
            if read_started <= self._dropped_at:
                return
            self._pop(key)
            if len(self._entries) >= self.max_entries:
                self._pop(next(iter(self._entries)))
            self._entries[key] = _Entry(value, read_started + life, scope, subject)
            if scope is not None and subject is not None:
                self._subjects.setdefault((scope, subject), set()).add(key)

    def discard(self, key: K) -> None:
        """Forget one entry (it met the truth and lost)."""
        with self._lock:
            self._pop(key)

    def drop(self, scope: Scope, subject: str | None = None) -> None:
        """Forget every entry of `subject` in `scope`, or with no subject every entry of
        the scope (a purge: rare, so a scan rather than a second index)."""
        with self._lock:
            self._dropped_at = self.clock()
            if subject is not None:
                keys: list[K] | set[K] = self._subjects.get((scope, subject), set())
            else:
                keys = [key for key, entry in self._entries.items() if entry.scope == scope]
            for key in list(keys):
                self._pop(key)

    def _pop(self, key: K) -> None:
        """Under the lock: remove one entry and its place in the subject index."""
        entry = self._entries.pop(key, None)
        if entry is None or entry.scope is None or entry.subject is None:
            return
        named = (entry.scope, entry.subject)
        keys = self._subjects.get(named)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._subjects[named]


class CacheGroup:
    """The caches of one process that follow the event feed: one drop reaches them all."""

    def __init__(self, *caches: Cache) -> None:  # type: ignore[type-arg]
        self.caches = caches

    def drop(self, scope: Scope, subject: str | None = None) -> None:
        for cache in self.caches:
            cache.drop(scope, subject)
