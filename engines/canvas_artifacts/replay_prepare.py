"""A replay body to its stored form: parsed, validated, segmented, compressed, written.

Parsing walks the body one keyframe at a time (`replay_ingest`), the frames
are compressed per segment (`replay_store`), and `store_replay` writes them.
Shared by the replay create and an archive's import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from engines.canvas_artifacts.models import ReplayDocument
from engines.canvas_artifacts.replay_ingest import ReplayError, ReplayLimits, parse_replay
from engines.canvas_artifacts.replay_store import compress
from engines.config import Settings
from engines.http.body import UPLOAD_CHUNK
from engines.http.errors import Unprocessable, first_error_message
from engines.runtime import Runtime
from engines.storage.base import StoredBlob
from engines.storage.ingest import ingest


@dataclass
class PreparedReplay:
    doc: ReplayDocument
    frames: list[bytes]
    """The blob: one zstd frame per segment (replay_store)."""
    index: dict[str, Any]
    meta: dict[str, Any]
    json_size: int
    json_sha256: str


def prepare_replay(raw: bytes, settings: Settings) -> PreparedReplay:
    """Parse, validate and segment a replay body (CPU-heavy: run it off the event loop).

    The body is walked one keyframe at a time (`replay_ingest`), so memory stays
    near the body's size whatever its shape; the envelope then goes through the
    pydantic model.
    """
    limits = ReplayLimits(max_keyframes=settings.max_keyframes,
                          max_keyframe_bytes=settings.max_keyframe_bytes,
                          max_depth=settings.max_json_depth)
    try:
        parsed = parse_replay(raw, limits)
        doc = ReplayDocument.model_validate({**parsed.envelope, "keyframes": []})
        parsed.check_revs(doc.rev)
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="replay.invalid") from exc
    except ReplayError as exc:
        raise Unprocessable(str(exc), code=exc.code) from exc
    stored = compress(*parsed.encoded())
    return PreparedReplay(doc=doc, frames=stored.frames, index=stored.index,
                          meta=parsed.meta(doc.rev_from, doc.mode), json_size=stored.json_size,
                          json_sha256=stored.json_sha256)


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    """The stored replay in upload-sized pieces: never joined into one more copy."""
    for part in parts:
        for start in range(0, len(part), UPLOAD_CHUNK):
            yield part[start:start + UPLOAD_CHUNK]


async def store_replay(rt: Runtime, key: str, prepared: PreparedReplay) -> StoredBlob:
    """Write a prepared replay's frames; the blob as the record describes it: the JSON a
    client gets back (its size and sha256), not the frames it is stored as."""
    size = sum(len(frame) for frame in prepared.frames)
    stored, _ = await ingest(rt.store, _chunks(prepared.frames), limit=size,
                             head_check=lambda _head: "application/json",
                             key_for=lambda _mime: key, leases=rt.leases)
    return replace(stored, size=prepared.json_size, sha256=prepared.json_sha256)
