"""Ids: unique, time-ordered, safe as path segments, and never repeated across a fork."""

from __future__ import annotations

import os
import time

from engines.common import ids
from engines.http.params import is_safe_id


def test_ids_are_unique_safe_and_sorted_by_time() -> None:
    first = [ids.new_id("a") for _ in range(5000)]
    time.sleep(0.002)
    later = ids.new_id("a")
    assert len(set(first)) == len(first)
    assert all(is_safe_id(value) and len(value) == 28 for value in first)
    assert later > max(first)


def test_the_random_part_uses_the_whole_alphabet() -> None:
    seen = {char for _ in range(2000) for char in ids.new_id("a")[12:]}
    assert seen == set(ids._ALPHABET)


def test_random_hex_has_the_length_asked_for_and_does_not_repeat() -> None:
    values = {ids.random_hex(16) for _ in range(10000)}
    assert len(values) == 10000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in values)


def test_a_forked_child_does_not_reuse_the_parents_buffered_bytes() -> None:
    ids.new_id("a")  # the buffer now holds bytes the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, ids.random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != ids.random_hex(16)
