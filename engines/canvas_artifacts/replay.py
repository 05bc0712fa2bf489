"""Replay windows: read the envelope and only the segments a window needs.

A replay blob is `{<envelope>, "keyframes": [...]}` with an index of ~64 KiB
time-ordered segments (written by `replay_ingest`). A window request reads
the envelope and only the segments that overlap the window (plus the
segment holding the snapshot to start from), instead of downloading and
parsing the whole replay.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

ReadRange = Callable[[int, int], bytes]
"""Read blob bytes [start, end) of the stored replay."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Keyframes [t_first..t_last] at bytes [start, end); the last snapshot's bytes."""

    t_first: int
    t_last: int
    start: int
    end: int
    snap_start: int
    snap_end: int


def cut_window(document: dict[str, Any], from_ms: int, to_ms: int) -> dict[str, Any]:
    """The document with keyframes limited to [from_ms, to_ms].

    Preceded by the last snapshot at or before from_ms so a player can start
    there; that snapshot is not repeated when it is itself in the window.
    """
    frames: list[dict[str, Any]] = document["keyframes"]
    times = [f["t_ms"] for f in frames]
    start, stop = bisect_left(times, from_ms), bisect_right(times, to_ms)
    window = frames[start:stop]
    for index in range(bisect_right(times, from_ms) - 1, -1, -1):
        if frames[index]["type"] == "snapshot":
            if index < start:
                window = [frames[index], *window]
            break
    return {**document, "keyframes": window}


def _frames(data: bytes) -> list[dict[str, Any]]:
    return orjson.loads(b"[" + data + b"]") if data else []


def _last_snapshot_before(segments: list[Segment], first: int, read: ReadRange,
                          ) -> list[dict[str, Any]]:
    """The last snapshot of the segments before `first`, as a one-item list (or empty)."""
    for segment in reversed(segments[:first]):
        if segment.snap_start >= 0:
            return _frames(read(segment.snap_start, segment.snap_end))
    return []


def read_window(index: dict[str, Any], read: ReadRange, from_ms: int,
                to_ms: int | None) -> bytes:
    """cut_window() as JSON bytes, computed from the segments that matter.

    `to_ms` None is an open end: up to the replay's last keyframe, however late.

    Segments strictly inside the window are copied through as raw bytes; only
    the two edge segments (and at most one earlier snapshot) are parsed, so
    the work is a copy of what is returned plus two segments of parsing, in
    two or three ranged reads (envelope, the window's span, maybe a snapshot).
    """
    segments = [Segment(*s) for s in index["segments"]]
    if to_ms is None:
        to_ms = max(from_ms, segments[-1].t_last if segments else 0)
    head = read(0, index["head"])
    firsts = [s.t_first for s in segments]
    lasts = [s.t_last for s in segments]
    # keyframes at or after from_ms start in the first segment ending at or after it;
    # everything before that segment is earlier than from_ms
    first = bisect_left(lasts, from_ms)
    stop = bisect_right(firsts, to_ms)
    if stop - first > 2 and segments[first + 1].t_first > from_ms:
        return _spliced_window(segments, first, stop, head, read, from_ms, to_ms)
    frames = _frames(read(segments[first].start, segments[stop - 1].end)) if first < stop else []
    if not any(f["type"] == "snapshot" and f["t_ms"] <= from_ms for f in frames):
        frames = [*_last_snapshot_before(segments, first, read), *frames]
    envelope = orjson.loads(head + b"]}")
    return orjson.dumps(cut_window({**envelope, "keyframes": frames}, from_ms, to_ms))


def _spliced_window(segments: list[Segment], first: int, stop: int, head: bytes,
                    read: ReadRange, from_ms: int, to_ms: int) -> bytes:
    """Window over 3+ segments: parse the edges, splice the middle as bytes.

    Every keyframe of segments first+1 .. stop-2 lies in the window (their
    times are bounded by the edge segments), and none is at exactly from_ms
    (checked by the caller), so the snapshot to start from is in the left edge
    segment or before it.
    """
    base = segments[first].start
    span = read(base, segments[stop - 1].end)  # one ranged read: each costs a round trip on S3
    left = _frames(span[: segments[first].end - base])
    right = _frames(span[segments[stop - 1].start - base:])
    middle = span[segments[first + 1].start - base: segments[stop - 2].end - base]
    snapshots = [f for f in left if f["type"] == "snapshot" and f["t_ms"] <= from_ms]
    if snapshots:
        prefix = [snapshots[-1]] if snapshots[-1]["t_ms"] < from_ms else []
    else:
        prefix = _last_snapshot_before(segments, first, read)
    parts = [orjson.dumps(f) for f in prefix]
    parts += [orjson.dumps(f) for f in left if f["t_ms"] >= from_ms]
    parts.append(middle)
    parts += [orjson.dumps(f) for f in right if f["t_ms"] <= to_ms]
    return head + b",".join(parts) + b"]}"
