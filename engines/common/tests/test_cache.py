"""The one cache design (engines/common/cache.py): bounded, time-limited, dropped by name."""

from __future__ import annotations

import threading

from engines.common.cache import Cache, CacheGroup

SCOPE = ("t_acme", "dev")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_size_is_bounded_and_the_oldest_entry_makes_room() -> None:
    cache: Cache[str, int] = Cache(3, 60.0)
    for n in range(5):
        cache.put(f"k{n}", n, cache.now(), scope=SCOPE, subject=f"art_{n}")
    assert len(cache) == 3
    assert [cache.get(f"k{n}") for n in range(5)] == [None, None, 2, 3, 4]
    assert len(cache._subjects) == 3, "evicted entries leave the subject index too"
    cache.put("k2", 20, cache.now(), scope=SCOPE, subject="art_2")  # a refill replaces
    assert len(cache) == 3 and cache.get("k2") == 20


def test_an_entry_lives_ttl_from_the_read_that_filled_it_or_less_if_asked() -> None:
    clock = FakeClock()
    cache: Cache[str, str] = Cache(10, 1.0, clock)
    started = cache.now()
    clock.t += 0.4  # the read took 400 ms
    cache.put("a", "A", started)
    cache.put("short", "S", started, ttl=0.5)  # e.g. a token that expires sooner
    cache.put("long", "L", started, ttl=99.0)  # never past the cache's own bound
    clock.t += 0.2
    assert (cache.get("a"), cache.get("short"), cache.get("long")) == ("A", None, "L")
    clock.t += 0.4  # 1 s after the read began
    assert (cache.get("a"), cache.get("long")) == (None, None)
    assert len(cache) == 0, "an expired entry is removed when met"


def test_a_disabled_cache_or_an_entry_with_no_life_left_keeps_nothing() -> None:
    off: Cache[str, int] = Cache(10, 0.0)
    off.put("a", 1, off.now())
    assert off.get("a") is None and not off.enabled
    cache: Cache[str, int] = Cache(10, 60.0)
    cache.put("gone", 1, cache.now(), ttl=-1.0)
    assert cache.get("gone") is None


def test_drop_by_subject_forgets_exactly_that_artifact_in_that_scope() -> None:
    cache: Cache[tuple[str, ...], str] = Cache(100, 60.0)
    for scope in (SCOPE, ("t_other", "dev"), ("t_acme", "prod")):
        for key in ("record", "variant_64", "variant_128"):
            cache.put((*scope, key), key, cache.now(), scope=scope, subject="art_1")
    cache.put((*SCOPE, "record_2"), "other", cache.now(), scope=SCOPE, subject="art_2")
    cache.drop(SCOPE, "art_1")
    assert [cache.get((*SCOPE, k)) for k in ("record", "variant_64", "variant_128")] == [None] * 3
    assert cache.get((*SCOPE, "record_2")) == "other"
    assert cache.get(("t_other", "dev", "record")) == "record", "another tenant is untouched"
    assert cache.get(("t_acme", "prod", "record")) == "record", "another env is untouched"
    cache.drop(SCOPE, "art_never_cached")  # a no-op


def test_drop_of_a_scope_forgets_all_of_it_and_nothing_else() -> None:
    cache: Cache[str, int] = Cache(100, 60.0)
    cache.put("asset_a", 1, cache.now(), scope=SCOPE)
    cache.put("record_a", 2, cache.now(), scope=SCOPE, subject="art_1")
    cache.put("asset_b", 3, cache.now(), scope=("t_other", "dev"))
    cache.put("unscoped", 4, cache.now())
    cache.drop(SCOPE)
    assert [cache.get(k) for k in ("asset_a", "record_a", "asset_b", "unscoped")] == [
        None, None, 3, 4]
    assert cache._subjects == {}


def test_a_read_that_raced_a_drop_is_not_kept() -> None:
    """The read began, a deletion was dropped, the read finished: its value may be the
    deleted one, so it is not cached. A read that begins after the drop is."""
    clock = FakeClock()
    cache: Cache[str, str] = Cache(10, 60.0, clock)
    started = cache.now()
    clock.t += 0.01
    cache.drop(SCOPE, "art_1")
    clock.t += 0.01
    cache.put("k", "maybe stale", started, scope=SCOPE, subject="art_1")
    assert cache.get("k") is None
    cache.put("k", "fresh", cache.now(), scope=SCOPE, subject="art_1")
    assert cache.get("k") == "fresh"


def test_a_group_drops_from_every_cache() -> None:
    records: Cache[str, int] = Cache(10, 60.0)
    variants: Cache[str, int] = Cache(10, 60.0)
    records.put("r", 1, records.now(), scope=SCOPE, subject="art_1")
    variants.put("v", 1, variants.now(), scope=SCOPE, subject="art_1")
    CacheGroup(records, variants).drop(SCOPE, "art_1")
    assert (records.get("r"), variants.get("v")) == (None, None)


def test_concurrent_puts_drops_and_gets_keep_the_index_consistent() -> None:
    cache: Cache[int, int] = Cache(50, 60.0)

    def work(offset: int) -> None:
        for n in range(2000):
            key = offset + n % 200
            cache.put(key, n, cache.now(), scope=SCOPE, subject=f"art_{key % 20}")
            cache.get(key)
            if n % 7 == 0:
                cache.drop(SCOPE, f"art_{n % 20}")

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 50
    indexed = {key for keys in cache._subjects.values() for key in keys}
    assert indexed == set(cache._entries)
