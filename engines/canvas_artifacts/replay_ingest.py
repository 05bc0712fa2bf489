"""A submitted replay to its stored form, one keyframe at a time, in bounded memory.

Parsing a whole replay with orjson materialised every value as a Python
object: 20-50 times the body's size for a dense document (a 50 MiB body of
`[{}, {}, ...]` took 2.6 GB). Here the body is walked value by value
(`jsonutil.read_value`): the envelope (every member but `keyframes`) is
read under its 64 KiB limit, and each keyframe is parsed, validated,
re-encoded and dropped before the next, so the keyframe cap holds before
the document is ever whole in memory and the peak is the body, its encoding
and one keyframe.

The stored blob is `{<envelope>, "keyframes": [...]}` (the same JSON value
as submitted). While encoding we note where each keyframe's bytes are,
grouped into ~64 KiB segments; that index goes to the database with the
record, so a window reads only the segments it needs (see `replay.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from engines.canvas_artifacts.models import MAX_INT
from engines.http.jsonutil import (
    MalformedJson,
    ValueTooLarge,
    json_depth,
    read_value,
    skip_whitespace,
    too_deep,
)

SEGMENT_BYTES = 64 * 1024
MIN_RUN_BYTES = 512
ENVELOPE_MAX_BYTES = 64 * 1024
"""Everything but `keyframes`, serialised: what every window re-reads and re-sends."""
ENVELOPE_VALUE_MAX_RAW = 4 * ENVELOPE_MAX_BYTES
"""Bytes read for one envelope value: room for the whitespace a pretty-printer adds."""
KEYFRAME_TYPES = frozenset({"snapshot", "commit", "gesture"})
_CONTAINERS = (dict, list)


class ReplayError(ValueError):
    """A replay breaks a rule; `code` is the error code the client gets (422)."""

    def __init__(self, message: str, code: str = "replay.invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    max_keyframes: int
    max_keyframe_bytes: int
    max_depth: int


def check_keyframe(index: int, frame: Any, previous_t_ms: int, max_depth: int) -> None:
    """The rules of `Keyframe`, in plain code: a replay can hold a million of them."""
    if type(frame) is not dict:
        raise ReplayError(f"keyframes[{index}]: must be an object")
    t_ms = frame.get("t_ms")
    if type(t_ms) is not int or not 0 <= t_ms <= MAX_INT:
        raise ReplayError(f"keyframes[{index}].t_ms: must be an integer from 0 to {MAX_INT}")
    if t_ms < previous_t_ms:
        raise ReplayError(
            f"keyframes[{index}].t_ms ({t_ms}) is earlier than keyframes[{index - 1}].t_ms "
            f"({previous_t_ms}); t_ms must be non-decreasing")
    kind = frame.get("type")
    if type(kind) is not str or kind not in KEYFRAME_TYPES:  # a list is not hashable
        raise ReplayError(f"keyframes[{index}].type: must be one of snapshot, commit, gesture")
    rev = frame.get("rev")
    if rev is not None and (type(rev) is not int or not 0 <= rev <= MAX_INT):
        raise ReplayError(f"keyframes[{index}].rev: must be an integer from 0 to {MAX_INT}")
    if type(frame.get("data", {})) is not dict:
        raise ReplayError(f"keyframes[{index}].data: must be an object")
    for value in frame.values():
        if type(value) in _CONTAINERS and json_depth(value) + 3 > max_depth:
            raise ReplayError(f"keyframes[{index}]: JSON nesting deeper than {max_depth}")


class KeyframeEncoder:
    """Keyframes checked and appended one at a time, with their segment index.

    Offsets are relative to the first keyframe: the envelope, written before
    the keyframes in the blob, may come after them in the body.
    """

    def __init__(self, limits: ReplayLimits) -> None:
        self.limits = limits
        self.out = bytearray()
        self.segments: list[list[int]] = []
        self.count = 0
        self.snapshots = 0
        self.first_t_ms = 0
        self.last_t_ms = 0
        self.top_rev: tuple[int, int] | None = None
        """(rev, index) of the first keyframe with the highest rev."""

    def add(self, frame: Any) -> None:
        index = self.count
        check_keyframe(index, frame, self.last_t_ms, self.limits.max_depth)
        t_ms = frame["t_ms"]
        if index:
            self.out += b","
        else:
            self.first_t_ms = t_ms
        start = len(self.out)
        self.out += orjson.dumps(frame)
        segment = self.segments[-1] if self.segments else None
        if segment is None or start - segment[2] >= SEGMENT_BYTES:
            segment = [t_ms, t_ms, start, len(self.out), -1, -1]
            self.segments.append(segment)
        segment[1], segment[3] = t_ms, len(self.out)
        if frame["type"] == "snapshot":
            segment[4], segment[5] = start, len(self.out)
            self.snapshots += 1
        rev = frame.get("rev")
        if rev is not None and (self.top_rev is None or rev > self.top_rev[0]):
            self.top_rev = (rev, index)
        self.last_t_ms = t_ms
        self.count = index + 1


@dataclass
class ParsedReplay:
    """The envelope (validated by the caller) and the keyframes, already encoded."""

    envelope: dict[str, Any]
    frames: KeyframeEncoder

    def check_revs(self, rev: int) -> None:
        """No keyframe is of a revision after the one the replay ends at."""
        top = self.frames.top_rev
        if top is not None and top[0] > rev:
            raise ReplayError(f"keyframes[{top[1]}].rev ({top[0]}) is greater than rev ({rev})")

    def encoded(self) -> tuple[list[bytes | memoryview], dict[str, Any]]:
        """The blob as parts (head, keyframes, tail: no copy of the keyframes) and its index."""
        envelope = orjson.dumps(self.envelope)[:-1]
        head = envelope + (b',"keyframes":[' if self.envelope else b'"keyframes":[')
        shift = len(head)
        segments = [[t_first, t_last, start + shift, end + shift,
                     snap_start + shift if snap_start >= 0 else -1,
                     snap_end + shift if snap_end >= 0 else -1]
                    for t_first, t_last, start, end, snap_start, snap_end in self.frames.segments]
        parts = [head, memoryview(self.frames.out), b"]}"]
        return parts, {"v": 1, "head": shift, "segments": segments}

    def meta(self, rev_from: int | None, mode: str) -> dict[str, Any]:
        frames = self.frames
        return {"keyframe_count": frames.count,
                "duration_ms": frames.last_t_ms - frames.first_t_ms if frames.count else 0,
                "snapshot_count": frames.snapshots, "rev_from": rev_from, "mode": mode}


def _malformed(message: str) -> ReplayError:
    return ReplayError(f"body is not valid JSON: {message}", code="request.malformed_json")


def _next(raw: bytes, pos: int, allowed: bytes, what: str) -> tuple[int, int]:
    """The next significant byte (one of `allowed`) and the position after it."""
    pos = skip_whitespace(raw, pos)
    if pos >= len(raw) or raw[pos] not in allowed:
        raise _malformed(f"expected {what} at byte {pos}")
    return raw[pos], pos + 1


def _whole_keyframes(raw: bytes, pos: int, limit: int) -> tuple[list[Any], int] | None:
    """The keyframes wholly inside raw[pos:pos+limit], parsed in one call, and the
    position of the next one; None when no such run is found (the caller goes one by one).

    The run ends at the last `},` in reach. Wrapped in brackets it parses only if
    that `}` closes a keyframe: a cut inside a string or a nested value leaves the
    text unbalanced, and JSON tokenises a prefix exactly as it does the whole.
    """
    cut = raw.rfind(b"},", pos, pos + limit)
    if cut < pos:
        return None
    try:
        run = orjson.loads(b"[" + raw[pos:cut + 1] + b"]")
    except orjson.JSONDecodeError:
        return None
    return run, skip_whitespace(raw, cut + 2)


def _read_keyframes(raw: bytes, pos: int, frames: KeyframeEncoder) -> int:
    """Parse, check and encode the keyframes array at raw[pos]; the position after it.

    Keyframes are parsed in runs of up to one segment's bytes (one orjson call
    for many small keyframes), or one at a time when no run is found.
    """
    limits = frames.limits
    if raw[pos:pos + 1] != b"[":
        raise ReplayError("keyframes: must be a list")
    pos = skip_whitespace(raw, pos + 1)
    if raw[pos:pos + 1] == b"]":
        return pos + 1
    longest_run = min(SEGMENT_BYTES, limits.max_keyframe_bytes)
    run_bytes = longest_run
    while True:
        found = _whole_keyframes(raw, pos, run_bytes)
        # a failed run costs a parse of its bytes: shrink after a failure, so a body
        # built to defeat runs costs about one small parse per keyframe, not 64 KiB
        run_bytes = min(run_bytes * 2, longest_run) if found else max(run_bytes // 4,
                                                                       MIN_RUN_BYTES)
        if found is not None:
            run, pos = found
        else:
            try:
                frame, pos = read_value(raw, pos, limits.max_keyframe_bytes)
            except ValueTooLarge as exc:
                raise ReplayError(f"keyframes[{frames.count}]: larger than "
                                  f"{limits.max_keyframe_bytes} bytes",
                                  code="replay.keyframe_too_large") from exc
            run = [frame]
        if frames.count + len(run) > limits.max_keyframes:
            raise ReplayError(f"more than {limits.max_keyframes} keyframes",
                              code="replay.too_many_keyframes")
        for frame in run:
            frames.add(frame)
        if found is not None:
            continue
        separator, pos = _next(raw, pos, b",]", "',' or ']'")
        if separator == ord("]"):
            return pos
        pos = skip_whitespace(raw, pos)


def _read_member(raw: bytes, pos: int) -> tuple[Any, int]:
    """An envelope key or value, read under the envelope's limit."""
    try:
        return read_value(raw, pos, ENVELOPE_VALUE_MAX_RAW)
    except ValueTooLarge as exc:
        raise _envelope_too_large() from exc


def _envelope_too_large() -> ReplayError:
    return ReplayError(f"the replay's members other than keyframes exceed {ENVELOPE_MAX_BYTES} "
                       "bytes", code="replay.envelope_too_large")


def parse_replay(raw: bytes, limits: ReplayLimits) -> ParsedReplay:
    """Walk the body's top-level object: envelope members and the keyframes array."""
    pos = skip_whitespace(raw, 0)
    if raw[pos:pos + 1] != b"{":
        raise ReplayError("replay must be a JSON object")
    envelope: dict[str, Any] = {}
    frames: KeyframeEncoder | None = None
    # each member costs key, value, ':' and ','; the braces are two bytes, less one comma
    budget = ENVELOPE_MAX_BYTES - 1
    pos = skip_whitespace(raw, pos + 1)
    closing = raw[pos:pos + 1] == b"}"
    pos += closing
    while not closing:
        try:
            key, pos = _read_member(raw, pos)
            if not isinstance(key, str):
                raise _malformed(f"object keys must be strings (byte {pos})")
            _, pos = _next(raw, pos, b":", "':'")
            pos = skip_whitespace(raw, pos)
            if key == "keyframes":
                if frames is not None:
                    raise ReplayError("keyframes: given twice")
                frames = KeyframeEncoder(limits)
                pos = _read_keyframes(raw, pos, frames)
            else:
                value, pos = _read_member(raw, pos)
                envelope[key] = value
                budget -= len(orjson.dumps(key)) + len(orjson.dumps(value)) + 2
                if budget < 0:
                    raise _envelope_too_large()
        except MalformedJson as exc:
            raise _malformed(str(exc)) from exc
        separator, pos = _next(raw, pos, b",}", "',' or '}'")
        closing = separator == ord("}")
        pos = skip_whitespace(raw, pos)
    if skip_whitespace(raw, pos) != len(raw):
        raise _malformed(f"unexpected content after the document at byte {pos}")
    if json_depth(envelope) > limits.max_depth:
        raise too_deep(limits.max_depth)
    if frames is None:
        raise ReplayError("keyframes: field required")
    return ParsedReplay(envelope=envelope, frames=frames)
