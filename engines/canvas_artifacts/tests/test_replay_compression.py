"""Replays are stored as one zstd frame per segment; clients only ever see the JSON.

The record's sha256 and size_bytes describe the JSON that /content returns
(whole or by Range) and that an export holds; windows read only their frames.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from conftest import Stack
from engines.canvas_artifacts import replay_ingest
from engines.canvas_artifacts.replay import cut_window, read_window
from engines.canvas_artifacts.replay_ingest import ReplayLimits, parse_replay
from engines.canvas_artifacts.replay_store import compress, read_json, stream_json
from engines.canvas_artifacts.repository import replay_indexes
from engines.canvas_artifacts.tests.helpers import create_replay, created, new_tenant, url
from engines.canvas_artifacts.tests.test_export import export, unpack
from engines.canvas_artifacts.tests.test_replay_segments import CountingReader, documents

LIMITS = ReplayLimits(max_keyframes=1_000_000, max_keyframe_bytes=1024 * 1024, max_depth=64)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def stored(doc: dict[str, Any]) -> tuple[bytes, bytes, dict[str, Any]]:
    """(the JSON, the stored blob, the index v2), as a create makes them."""
    parts, index = parse_replay(orjson.dumps(doc), LIMITS).encoded()
    packed = compress(parts, index)
    return b"".join(parts), b"".join(packed.frames), packed.index


def keyframe_stream(count: int) -> list[dict[str, Any]]:
    return [{"t_ms": t * 10, "type": "snapshot" if t % 500 == 0 else "commit", "rev": 1,
             "data": {"node": f"n{t % 97}", "x": t % 640, "y": (t * 7) % 480,
                      "op": "move", "style": {"fill": "#336699", "stroke": "none"}}}
            for t in range(count)]


@settings(max_examples=100, deadline=None)
@given(doc=documents, a=st.integers(0, 60), span=st.integers(0, 60), cut=st.data())
def test_frames_give_back_the_json_and_the_same_windows(
        doc: dict[str, Any], a: int, span: int, cut: st.DataObject) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replay_ingest, "SEGMENT_BYTES", 60)  # many frames per document
        json, blob, index = stored(doc)
    start = cut.draw(st.integers(0, len(json)))
    end = cut.draw(st.integers(start, len(json)))
    reader = CountingReader(blob)
    assert read_json(index, reader, start, end) == json[start:end]
    assert b"".join(stream_json(index, reader, start, end)) == json[start:end]
    window = read_window(index, lambda s, e: read_json(index, reader, s, e), a, a + span)
    assert orjson.loads(window) == cut_window(doc, a, a + span)


def test_a_window_reads_only_its_frames_and_the_stream_is_small() -> None:
    doc = {"rev": 1, "keyframes": keyframe_stream(40_000), "summary": {}}
    json, blob, index = stored(doc)
    assert blob.startswith(ZSTD_MAGIC)
    assert len(blob) <= 0.25 * len(json)
    reader = CountingReader(blob)
    frames = orjson.loads(read_window(index, lambda s, e: read_json(index, reader, s, e),
                                      200_000, 204_000))["keyframes"]
    assert [f["t_ms"] for f in frames] == list(range(200_000, 204_001, 10))
    assert frames[0]["type"] == "snapshot"
    assert reader.bytes_read < 0.05 * len(blob)


def test_replay_content_range_and_export_are_the_json_the_record_describes(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_ingest, "SEGMENT_BYTES", 2048)
    tenant, canvas = new_tenant(), "c_zstd"
    document = {"rev": 3, "mode": "keyframes", "keyframes": keyframe_stream(2000),
                "summary": {}}
    record = created(create_replay(stack, canvas, document, tenant=tenant))
    headers = stack.headers(tenant)
    body = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=headers)
    assert body.status_code == 200
    assert orjson.loads(body.content) == document
    assert len(body.content) == record["size_bytes"]
    assert hashlib.sha256(body.content).hexdigest() == record["sha256"]
    assert body.headers["etag"] == f'"{record["sha256"]}"'

    blob = stack.runtime.store.read_all(stack.runtime.store.key_for(record["uri"]))
    assert blob.startswith(ZSTD_MAGIC) and len(blob) < len(body.content) / 4

    part = stack.client.get(url(canvas, f"/{record['id']}/content"),
                            headers={**headers, "Range": "bytes=5000-70000"})
    assert part.status_code == 206
    assert part.content == body.content[5000:70001]

    _manifest, files, _ = unpack(export(stack, canvas, tenant=tenant))
    assert files[f"replay/{record['id']}.json"] == body.content


def test_a_replay_stored_before_compression_still_reads(stack: Stack) -> None:
    """A v1 replay: the blob is the JSON itself and its index has no frame table."""
    tenant, canvas = new_tenant(), "c_v1"
    document = {"rev": 3, "keyframes": keyframe_stream(300), "summary": {}}
    record = created(create_replay(stack, canvas, document, tenant=tenant))
    parts, index = parse_replay(orjson.dumps(document), LIMITS).encoded()
    json = b"".join(parts)
    store = stack.runtime.store
    store.put_bytes(store.key_for(record["uri"]), json, "application/json")
    with stack.runtime.engine.begin() as conn:
        conn.execute(update(replay_indexes).where(
            replay_indexes.c.artifact_id == record["id"]).values(segments=index))
    headers = stack.headers(tenant)
    assert stack.client.get(url(canvas, f"/{record['id']}/content"),
                            headers=headers).content == json
    window = stack.client.get(url(canvas, f"/{record['id']}/content?from_ms=1000&to_ms=1200"),
                              headers=headers)
    assert orjson.loads(window.content) == cut_window(document, 1000, 1200)
