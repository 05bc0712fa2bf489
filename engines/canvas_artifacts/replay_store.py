"""Stored replays: one zstd frame per segment, read back as the JSON that was submitted.

A replay's JSON is cut where its index already cuts it (the head, then each
~64 KiB segment of keyframes) and each piece is compressed as a zstd frame of
its own. The blob is those frames end to end, which is itself a valid zstd
stream; the index (v2) adds two lists to the segments:

- `cuts`: where each frame starts in the JSON, plus the JSON's size;
- `offsets`: where each frame starts in the blob, plus the blob's size.

Every offset elsewhere in the index (head, segment and snapshot bounds) is a
position in the JSON, so `replay.read_window` is unchanged: it asks for JSON
byte ranges and `read_json` turns each into one ranged read of the frames
that hold it. A window therefore reads only its own frames, compressed.

Compression is invisible in the contract: the record's sha256 and size_bytes
describe the JSON (what /content returns and an export contains). Replays
stored before v2 (index without `cuts`) are the JSON itself and read as is.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

from engines.storage.base import BlobStore

LEVEL = 3
"""zstd level: ~5-10x on keyframe JSON at a few hundred MiB/s."""
READ_BATCH = 1024 * 1024
"""A streamed read decompresses about this many JSON bytes at a time (one frame at least)."""

ReadStored = Callable[[int, int], bytes]
"""Blob bytes [start, end) as stored."""


@dataclass(frozen=True, slots=True)
class Compressed:
    """What `compress` produced: the blob's frames, the index v2, and the JSON's identity."""

    frames: list[bytes]
    index: dict[str, Any]
    json_size: int
    json_sha256: str


def _piece(parts: list[bytes | memoryview], start: int, end: int) -> bytes:
    """JSON bytes [start, end) of the document given as consecutive parts."""
    out = []
    base = 0
    for part in parts:
        size = len(part)
        if base + size > start and base < end:
            out.append(bytes(part[max(0, start - base):min(size, end - base)]))
        base += size
    return b"".join(out)


def compress(parts: list[bytes | memoryview], index: dict[str, Any]) -> Compressed:
    """The JSON given as parts (see `ParsedReplay.encoded`), one frame per segment."""
    size = sum(len(part) for part in parts)
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    starts = {0, index["head"], *(segment[2] for segment in index["segments"])}
    cuts = sorted(cut for cut in starts if cut < size) + [size]
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    frames = [compressor.compress(_piece(parts, a, b))
              for a, b in zip(cuts, cuts[1:], strict=False)]
    offsets = [0]
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    return Compressed(frames=frames, index={**index, "v": 2, "cuts": cuts, "offsets": offsets},
                      json_size=size, json_sha256=digest.hexdigest())


def is_compressed(index: dict[str, Any] | None) -> bool:
    return index is not None and "cuts" in index


def _frames_for(index: dict[str, Any], start: int, end: int) -> tuple[int, int]:
    """Frames [first, stop) holding JSON bytes [start, end)."""
    cuts = index["cuts"]
    return bisect_right(cuts, start) - 1, max(bisect_left(cuts, end), bisect_right(cuts, start))


def _decoded(index: dict[str, Any], stored: bytes, first: int, stop: int) -> bytes:
    offsets = index["offsets"]
    base = offsets[first]
    decompressor = zstandard.ZstdDecompressor()
    return b"".join(decompressor.decompress(stored[offsets[i] - base:offsets[i + 1] - base])
                    for i in range(first, stop))


def read_json(index: dict[str, Any], read_stored: ReadStored, start: int, end: int) -> bytes:
    """JSON bytes [start, end) from one ranged read of the frames that hold them."""
    if start >= end:
        return b""
    first, stop = _frames_for(index, start, end)
    offsets, cuts = index["offsets"], index["cuts"]
    data = _decoded(index, read_stored(offsets[first], offsets[stop]), first, stop)
    return data[start - cuts[first]:end - cuts[first]]


def stream_json(index: dict[str, Any], read_stored: ReadStored, start: int,
                end: int) -> Iterator[bytes]:
    """JSON bytes [start, end), decompressed a batch of frames at a time (flat memory)."""
    if start >= end:
        return
    first, stop = _frames_for(index, start, end)
    offsets, cuts = index["offsets"], index["cuts"]
    while first < stop:
        last = first + 1
        while last < stop and cuts[last + 1] - cuts[first] <= READ_BATCH:
            last += 1
        data = _decoded(index, read_stored(offsets[first], offsets[last]), first, last)
        base = cuts[first]
        yield data[max(0, start - base):min(len(data), end - base)]
        first = last


class DecodedReplay:
    """The reads `content.serve_blob` and exports make, answered with a compressed
    replay's JSON: positions and sizes are the JSON's, as in the record."""

    reads_block_briefly = False

    def __init__(self, store: BlobStore, index: dict[str, Any]) -> None:
        self.store = store
        self.index = index

    def _stored(self, key: str) -> ReadStored:
        return lambda start, end: self.store.read_all(key, start, end - 1)

    def read_all(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """JSON bytes [start, end], end inclusive as in BlobStore."""
        stop = self.index["cuts"][-1] if end is None else end + 1
        return read_json(self.index, self._stored(key), start, stop)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        stop = self.index["cuts"][-1] if end is None else end + 1
        return stream_json(self.index, self._stored(key), start, stop)

    def presign(self, key: str, ttl_seconds: int) -> None:
        """The bucket holds frames, not the JSON: never redirect a client there."""
        return None


def json_reader(store: BlobStore, index: dict[str, Any] | None) -> BlobStore | DecodedReplay:
    """What reads a replay's JSON: the store itself for replays stored before v2."""
    return DecodedReplay(store, index) if is_compressed(index) else store
