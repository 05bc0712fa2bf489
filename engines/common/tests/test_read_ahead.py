"""read_ahead: the same items in the same order, errors where they happened, no leftovers."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from engines.common.read_ahead import read_ahead

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def _gone(name: str) -> bool:
    deadline = time.monotonic() + 10
    while _alive(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _alive(name)


def test_items_come_in_order_and_the_thread_ends() -> None:
    assert list(read_ahead(iter(range(1000)), "t-order")) == list(range(1000))
    assert _gone("t-order")


def test_an_error_comes_after_the_items_made_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("the store went away")

    got: list[int] = []
    with pytest.raises(OSError, match="the store went away"):
        for item in read_ahead(failing(), "t-error"):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_stops_the_producer() -> None:
    made: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            made.append(n)
            yield n
            n += 1

    items = read_ahead(endless(), "t-stop")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert _gone("t-stop")
    assert len(made) <= 3 + 2, "the producer ran more than two items ahead"


def test_the_producer_runs_in_the_callers_context() -> None:
    def who() -> Iterator[str]:
        yield WHO.get()

    token = WHO.set("gc")
    try:
        assert list(read_ahead(who(), "t-context")) == ["gc"]
    finally:
        WHO.reset(token)
