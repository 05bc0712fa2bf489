"""The segmented replay encoding: same JSON value, and windows equal to a full cut."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.canvas_artifacts import replay_ingest
from engines.canvas_artifacts.replay import cut_window, read_window
from engines.canvas_artifacts.replay_ingest import ReplayLimits, parse_replay

LIMITS = ReplayLimits(max_keyframes=1_000_000, max_keyframe_bytes=1024 * 1024, max_depth=64)

frame = st.fixed_dictionaries({
    "t_ms": st.integers(0, 50),
    "type": st.sampled_from(["snapshot", "commit", "gesture"]),
    "data": st.dictionaries(st.sampled_from(["x", "y"]), st.integers(-1000, 1000), max_size=2),
})
documents = st.builds(
    lambda frames, summary: {"rev": 3, "mode": "keyframes",
                             "keyframes": sorted(frames, key=lambda f: f["t_ms"]),
                             "summary": summary},
    st.lists(frame, max_size=40),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2))


@pytest.fixture(autouse=True)
def tiny_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of a few frames each, so windows cross many segment boundaries."""
    monkeypatch.setattr(replay_ingest, "SEGMENT_BYTES", 60)


def encode_replay(doc: dict) -> tuple[bytes, dict]:  # type: ignore[type-arg]
    """The stored blob and index, as a create makes them from the document's JSON."""
    parts, index = parse_replay(orjson.dumps(doc), LIMITS).encoded()
    return b"".join(parts), index


class CountingReader:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.bytes_read = 0

    def __call__(self, start: int, end: int) -> bytes:
        self.bytes_read += end - start
        return self.blob[start:end]


@settings(max_examples=200, deadline=None)
@given(doc=documents, a=st.integers(0, 60), span=st.integers(0, 60))
def test_window_from_segments_equals_cut_of_whole_document(doc, a, span) -> None:
    blob, index = encode_replay(doc)
    assert orjson.loads(blob) == doc
    window = read_window(index, CountingReader(blob), a, a + span)
    assert orjson.loads(window) == cut_window(doc, a, a + span)


def test_window_reads_a_small_fraction_of_a_large_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [{"t_ms": t, "type": "snapshot" if t % 1000 == 0 else "commit",
               "data": {"pad": "x" * 200}} for t in range(20_000)]
    doc = {"rev": 1, "keyframes": frames, "summary": {}}
    monkeypatch.setattr(replay_ingest, "SEGMENT_BYTES", 64 * 1024)
    blob, index = encode_replay(doc)
    reader = CountingReader(blob)
    window = orjson.loads(read_window(index, reader, 10_500, 10_700))
    assert [f["t_ms"] for f in window["keyframes"]] == [10_000, *range(10_500, 10_701)]
    assert reader.bytes_read < len(blob) * 0.05


def test_window_after_the_last_keyframe_keeps_the_last_snapshot() -> None:
    doc = {"rev": 1, "keyframes": [{"t_ms": 0, "type": "snapshot", "data": {}},
                                   {"t_ms": 5, "type": "commit", "data": {}}]}
    blob, index = encode_replay(doc)
    window = orjson.loads(read_window(index, CountingReader(blob), 100, 200))
    assert window["keyframes"] == [doc["keyframes"][0]]


def test_empty_replay_encodes_and_windows() -> None:
    doc = {"rev": 0, "keyframes": []}
    blob, index = encode_replay(doc)
    assert orjson.loads(blob) == doc
    assert orjson.loads(read_window(index, CountingReader(blob), 0, 10)) == doc
