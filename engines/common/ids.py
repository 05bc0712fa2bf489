"""Time-ordered ids: sorting by id is sorting by creation time.

48 bits of milliseconds then 80 random bits, Crockford base32, lower case.
They match the safe-id pattern, so they can be path segments as they are.

A create mints five random values (four ids and a request id). Each
`os.urandom` call releases the GIL and must win it back from the SQLite
writer thread, which cost ~70 us of event-loop time per call under load; so
random bytes are drawn 4 KiB at a time and handed out from that buffer. A
forked child starts with an empty buffer (never its parent's bytes).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_CHARS = bytes(ord(_ALPHABET[byte & 31]) for byte in range(256))
"""A random byte -> one base32 character; 256 is a multiple of 32, so each is uniform."""
_BUFFER_SIZE = 4096


class _RandomBytes:
    """os.urandom, buffered; thread-safe and fork-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def reset(self) -> None:
        self._buffer, self._offset = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            end = self._offset + count
            if end > len(self._buffer):
                self._buffer, self._offset, end = os.urandom(max(_BUFFER_SIZE, count)), 0, count
            chunk = self._buffer[self._offset:end]
            self._offset = end
            return chunk


_random = _RandomBytes()
os.register_at_fork(after_in_child=_random.reset)


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def random_hex(size: int) -> str:
    """`size` random bytes as hex (what uuid4().hex gives, without its version bits)."""
    return _random.take(size).hex()


def new_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    rand = _random.take(16).translate(_CHARS).decode("ascii")
    return f"{prefix}_{_b32(millis, 10)}{rand}"
