"""Reading a replay body one keyframe at a time: same value as a whole parse, same errors.

`parse_replay` never parses the body whole, so these tests hold it to what
a whole parse gives: the stored blob is the submitted JSON value whatever
the formatting, member order or content of strings, and every malformed
body is a 422.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import new_canvas
from engines.canvas_artifacts import replay_ingest
from engines.canvas_artifacts.replay_ingest import (
    ENVELOPE_MAX_BYTES,
    ReplayError,
    ReplayLimits,
    parse_replay,
)
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_replay,
    created,
    replay_document,
    url,
)

LIMITS = ReplayLimits(max_keyframes=1000, max_keyframe_bytes=4096, max_depth=64)


def stored(raw: bytes, limits: ReplayLimits = LIMITS) -> object:
    parts, _index = parse_replay(raw, limits).encoded()
    return orjson.loads(b"".join(parts))


# strings that look like structure to a byte scanner: the runs must never cut inside them
tricky_text = st.sampled_from(["}", "},", "},{", "]", "\"},{\"t_ms\":1}", "é", "😀", "\\", ""])
frame = st.fixed_dictionaries({
    "t_ms": st.integers(0, 20),
    "type": st.sampled_from(["snapshot", "commit", "gesture"]),
    "data": st.dictionaries(st.text(max_size=4) | tricky_text,
                            st.lists(st.dictionaries(tricky_text, tricky_text, max_size=2),
                                     max_size=3) | st.integers(-(2**63), 2**64 - 1) | tricky_text,
                            max_size=3),
})
documents = st.builds(
    lambda frames, summary, keyframes_first: (
        {"keyframes": sorted(frames, key=lambda f: f["t_ms"]), "rev": 3, "summary": summary}
        if keyframes_first else
        {"rev": 3, "summary": summary, "keyframes": sorted(frames, key=lambda f: f["t_ms"])}),
    st.lists(frame, max_size=30), st.dictionaries(st.text(max_size=3), tricky_text, max_size=2),
    st.booleans())
formats = st.sampled_from([
    lambda d: orjson.dumps(d),
    lambda d: orjson.dumps(d, option=orjson.OPT_INDENT_2),
    lambda d: json.dumps(d).encode(),                         # ", " and ": " separators
    lambda d: json.dumps(d, indent="\t", ensure_ascii=True).encode(),  # \uXXXX escapes
    lambda d: b" \r\n" + json.dumps(d, separators=(" , ", " : ")).encode() + b"\n\n",
])


@pytest.fixture(autouse=True)
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of a few hundred bytes, so documents cross many run boundaries."""
    monkeypatch.setattr(replay_ingest, "SEGMENT_BYTES", 200)


@settings(max_examples=300, deadline=None)
@given(doc=documents, dump=formats)
def test_stored_value_is_the_submitted_value(doc, dump) -> None:
    assert stored(dump(doc)) == doc


def _error(raw: bytes, limits: ReplayLimits = LIMITS) -> ReplayError:
    with pytest.raises(ReplayError) as caught:
        parse_replay(raw, limits)
    return caught.value


MALFORMED = [
    b"", b"   ", b"{", b'{"rev": 1', b'{"rev": 1,}', b'{"rev" 1}', b'{1: 2}',
    b'{"rev": 1, "keyframes": []} x', b'{"rev": 1, "keyframes": []}{}',
    b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit"},]}',
    b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit"} {"t_ms": 1}]}',
    b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit"}',
    b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit", "data": {"s": "\xff"}}]}',
    b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit", "data": {"s": "\\ud800"}}]}',
    b'[{"rev": 1}]', b'"replay"', b"null",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_bodies_are_refused(raw: bytes) -> None:
    assert _error(raw).code in ("request.malformed_json", "replay.invalid")


def test_keyframes_twice_or_missing_is_refused() -> None:
    assert "twice" in str(_error(b'{"rev": 1, "keyframes": [], "keyframes": []}'))
    assert "keyframes" in str(_error(b'{"rev": 1}'))
    assert "must be a list" in str(_error(b'{"rev": 1, "keyframes": {"t_ms": 0}}'))


def test_envelope_limit_is_on_its_serialised_size() -> None:
    """Up to 64 KiB of envelope JSON is accepted however it is indented; a byte more is not."""
    def body(pad: int, indent: bool = False) -> bytes:
        doc = {"rev": 1, "keyframes": [], "summary": {"pad": "x" * pad}}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)

    overhead = len(orjson.dumps({"rev": 1, "summary": {"pad": ""}}))
    fits = ENVELOPE_MAX_BYTES - overhead
    assert stored(body(fits))["summary"]["pad"] == "x" * fits
    assert stored(body(fits, indent=True))["summary"]["pad"] == "x" * fits
    assert _error(body(fits + 1)).code == "replay.envelope_too_large"


def test_a_huge_envelope_is_refused_without_reading_it_whole() -> None:
    """The finding's body: 50 MiB of `[{}, {}, ...]` beside the keyframes."""
    for raw in (b'{"rev": 1, "keyframes": [], "x": [' + b"{}," * 2_000_000 + b"{}]}",
                b'{"x": [' + b"{}," * 2_000_000 + b'{}], "rev": 1, "keyframes": []}',
                b'{"' + b"k" * 300_000 + b'": 1, "rev": 1, "keyframes": []}'):
        assert _error(raw).code == "replay.envelope_too_large"


def test_a_keyframe_over_its_limit_is_refused() -> None:
    big = {"t_ms": 0, "type": "commit", "data": {"x": [{}] * 2000}}
    error = _error(orjson.dumps({"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit"}, big]}))
    assert error.code == "replay.keyframe_too_large"
    assert str(error).startswith("keyframes[1]")


def test_the_keyframe_cap_holds_in_runs_and_one_by_one() -> None:
    limits = ReplayLimits(max_keyframes=10, max_keyframe_bytes=4096, max_depth=64)
    frames = [{"t_ms": t, "type": "commit"} for t in range(11)]
    for dump in (orjson.dumps, lambda d: json.dumps(d, indent=1).encode()):
        assert _error(dump({"rev": 1, "keyframes": frames}), limits).code == \
            "replay.too_many_keyframes"
        assert len(stored(dump({"rev": 1, "keyframes": frames[:10]}), limits)["keyframes"]) == 10


def test_legacy_replay_with_a_huge_envelope_refuses_windows(monkeypatch, stack):
    """Stored before the limit: a window answers 422 instead of parsing it all; the
    whole content still downloads."""
    monkeypatch.setattr(replay_ingest, "ENVELOPE_MAX_BYTES", 1024 * 1024)
    canvas = new_canvas()
    document = {**replay_document(), "summary": {"pad": "x" * 200_000}}
    record = created(create_replay(stack, canvas, document))
    monkeypatch.undo()
    content = url(canvas, f"/{record['id']}/content")
    window = stack.client.get(content + "?from_ms=0&to_ms=1", headers=stack.headers())
    assert_error(window, 422, "replay.envelope_too_large")
    whole = stack.client.get(content, headers=stack.headers())
    assert whole.status_code == 200 and whole.json() == document


def test_a_body_built_to_defeat_runs_costs_little_parsing(monkeypatch) -> None:
    """Each keyframe ends in a string holding `},`: the last `},` in reach of a run is
    mostly inside a string, so runs fail. They must then shrink, or every keyframe
    would cost a 64 KiB parse (147 us instead of 5 per keyframe, measured)."""
    monkeypatch.setattr(replay_ingest, "SEGMENT_BYTES", 64 * 1024)
    frame = {"t_ms": 0, "type": "commit", "data": {"s": "}," + "x" * 100}}
    body = orjson.dumps({"rev": 1, "keyframes": [frame] * 3000})
    parsed = 0
    real_loads = orjson.loads

    def counting_loads(data):
        nonlocal parsed
        parsed += len(data)
        return real_loads(data)

    monkeypatch.setattr(replay_ingest.orjson, "loads", counting_loads)
    limits = ReplayLimits(max_keyframes=10_000, max_keyframe_bytes=1024 * 1024, max_depth=64)
    assert parse_replay(body, limits).frames.count == 3000
    assert parsed < 20 * len(body), f"{parsed / len(body):.0f}x the body parsed"


@pytest.mark.parametrize("char", ["é", "😀", "中"])
def test_a_slice_boundary_inside_a_multibyte_character_is_not_malformed(char: str) -> None:
    """The reader parses growing slices; one ending inside a UTF-8 character must read as
    'needs more bytes', not as invalid JSON (found by the property test above)."""
    from engines.http.jsonutil import read_value

    encoded = char.encode()
    for offset in range(1, len(encoded)):
        value = "a" * (4096 - 1 - offset) + char
        raw = orjson.dumps(value)
        assert read_value(raw + b"]", 0, 1 << 20) == (value, len(raw))
