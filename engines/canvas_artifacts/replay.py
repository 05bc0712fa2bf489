"""Replay documents: stored in time-ordered segments so windows read little.

A replay blob is the document re-encoded as `{<envelope>, "keyframes": [...]}`
(the same JSON value as submitted). While encoding we note where each
keyframe's bytes are, grouped into ~64 KiB segments; that index goes to the
database with the record. A window request then reads the envelope and only
the segments that overlap the window (plus the segment holding the snapshot
to start from), instead of downloading and parsing the whole replay.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from engines.canvas_artifacts.models import ReplayDocument
from engines.common.jsonutil import json_depth

SEGMENT_BYTES = 64 * 1024

ReadRange = Callable[[int, int], bytes]
"""Read blob bytes [start, end) of the stored replay."""


KEYFRAME_TYPES = frozenset({"snapshot", "commit", "gesture"})
MAX_REV = 2**53
_CONTAINERS = (dict, list)


class KeyframeError(ValueError):
    """A keyframe breaks a rule; the message starts with `keyframes[i]`."""


def check_keyframes(frames: Any, *, max_depth: int) -> None:
    """The rules of `Keyframe`, in one plain loop over the parsed dicts.

    A replay can hold a million keyframes. One pydantic call per document
    validated 200k keyframes in ~2 s without ever releasing the GIL, which
    froze the worker's event loop long enough for uvicorn to kill it; this
    loop is several times faster and, being bytecode, lets other threads in.
    `data` values are depth-checked here (the envelope is checked whole).
    """
    if not isinstance(frames, list):
        raise KeyframeError("keyframes: must be a list")
    previous = 0
    for index, frame in enumerate(frames):
        if type(frame) is not dict:
            raise KeyframeError(f"keyframes[{index}]: must be an object")
        t_ms = frame.get("t_ms")
        if type(t_ms) is not int or t_ms < 0:
            raise KeyframeError(f"keyframes[{index}].t_ms: must be an integer >= 0")
        if t_ms < previous:
            raise KeyframeError(
                f"keyframes[{index}].t_ms ({t_ms}) is earlier than keyframes[{index - 1}].t_ms "
                f"({previous}); t_ms must be non-decreasing")
        previous = t_ms
        kind = frame.get("type")
        if type(kind) is not str or kind not in KEYFRAME_TYPES:  # a list is not hashable
            raise KeyframeError(f"keyframes[{index}].type: must be one of snapshot, commit, "
                                "gesture")
        rev = frame.get("rev")
        if rev is not None and (type(rev) is not int or not 0 <= rev <= MAX_REV):
            raise KeyframeError(f"keyframes[{index}].rev: must be an integer >= 0")
        data = frame.get("data", {})
        if type(data) is not dict:
            raise KeyframeError(f"keyframes[{index}].data: must be an object")
        for value in frame.values():
            if type(value) in _CONTAINERS and json_depth(value) + 3 > max_depth:
                raise KeyframeError(f"keyframes[{index}]: JSON nesting deeper than {max_depth}")


def replay_meta(doc: ReplayDocument, frames: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "keyframe_count": len(frames),
        "duration_ms": frames[-1]["t_ms"] - frames[0]["t_ms"] if frames else 0,
        "snapshot_count": sum(1 for f in frames if f["type"] == "snapshot"),
        "rev_from": doc.rev_from,
        "mode": doc.mode,
    }


@dataclass(frozen=True, slots=True)
class Segment:
    """Keyframes [t_first..t_last] at bytes [start, end); the last snapshot's bytes."""

    t_first: int
    t_last: int
    start: int
    end: int
    snap_start: int
    snap_end: int

    def as_list(self) -> list[int]:
        return [self.t_first, self.t_last, self.start, self.end, self.snap_start, self.snap_end]


def encode_replay(document: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The blob bytes and the segment index for a validated replay document."""
    envelope = {k: v for k, v in document.items() if k != "keyframes"}
    head = orjson.dumps(envelope)[:-1] + (b',"keyframes":[' if envelope else b'"keyframes":[')
    out = bytearray(head)
    segments: list[list[int]] = []
    current: list[int] | None = None
    for position, frame in enumerate(document["keyframes"]):
        if position:
            out += b","
        start = len(out)
        out += orjson.dumps(frame)
        t_ms = frame["t_ms"]
        if current is None or start - current[2] >= SEGMENT_BYTES:
            current = [t_ms, t_ms, start, len(out), -1, -1]
            segments.append(current)
        current[1], current[3] = t_ms, len(out)
        if frame["type"] == "snapshot":
            current[4], current[5] = start, len(out)
    out += b"]}"
    return bytes(out), {"v": 1, "head": len(head), "segments": segments}


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


def read_window(index: dict[str, Any], read: ReadRange, from_ms: int, to_ms: int) -> bytes:
    """cut_window() as JSON bytes, computed from the segments that matter.

    Segments strictly inside the window are copied through as raw bytes; only
    the two edge segments (and at most one earlier snapshot) are parsed, so
    the work is a copy of what is returned plus two segments of parsing, in
    two or three ranged reads (envelope, the window's span, maybe a snapshot).
    """
    segments = [Segment(*s) for s in index["segments"]]
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
