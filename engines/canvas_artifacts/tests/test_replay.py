"""Replays: validation, the summary in the record, the stored document and windows."""

from __future__ import annotations

import orjson

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    FRAMES,
    assert_error,
    assert_nothing_kept,
    create_preview,
    create_replay,
    created,
    new_tenant,
    replay_document,
    url,
)


def _content(stack, canvas: str, artifact_id: str, query: str = ""):
    return stack.client.get(url(canvas, f"/{artifact_id}/content{query}"),
                            headers=stack.headers())


def _times(document: dict) -> list[tuple[int, str]]:  # type: ignore[type-arg]
    return [(f["t_ms"], f["type"]) for f in document["keyframes"]]


def test_replay_is_stored_and_returned_as_the_same_json_value(stack):
    canvas = new_canvas()
    document = replay_document()
    record = created(create_replay(stack, canvas, document))

    assert record["kind"] == "replay"
    assert record["rev"] == 42
    assert record["mime_type"] == "application/json"
    assert record["meta"]["keyframe_count"] == 8
    assert record["meta"]["duration_ms"] == 700
    assert record["meta"]["snapshot_count"] == 3

    got = _content(stack, canvas, record["id"])
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/json")
    assert got.json() == document
    assert got.headers["etag"] == f'"{record["sha256"]}"'
    assert record["size_bytes"] == len(got.content)


def test_meta_for_a_replay_that_does_not_start_at_zero(stack):
    frames = [{"t_ms": 250, "type": "commit", "data": {}},
              {"t_ms": 250, "type": "snapshot", "data": {}},
              {"t_ms": 1250, "type": "gesture", "data": {}}]
    document = replay_document(frames, rev=7, rev_from=2)
    record = created(create_replay(stack, new_canvas(), document))
    assert record["rev"] == 7
    assert record["meta"]["keyframe_count"] == 3
    assert record["meta"]["duration_ms"] == 1000
    assert record["meta"]["snapshot_count"] == 1


def test_empty_replay(stack):
    canvas = new_canvas()
    document = replay_document([])
    record = created(create_replay(stack, canvas, document))
    assert record["meta"]["keyframe_count"] == 0
    assert record["meta"]["duration_ms"] == 0
    assert record["meta"]["snapshot_count"] == 0
    assert _content(stack, canvas, record["id"]).json() == document
    windowed = _content(stack, canvas, record["id"], "?from_ms=0&to_ms=10").json()
    assert windowed == document


# (from_ms, to_ms) -> the (t_ms, type) pairs the window must hold, for FRAMES
# (snapshots at 0, 300 and 600; one keyframe every 100 ms up to 700).
WINDOWS = [
    ((350, 550), [(300, "snapshot"), (400, "commit"), (500, "gesture")]),
    # the snapshot at A is itself in the window: not repeated
    ((300, 500), [(300, "snapshot"), (400, "commit"), (500, "gesture")]),
    ((0, 100), [(0, "snapshot"), (100, "commit")]),
    ((150, 250), [(0, "snapshot"), (200, "gesture")]),
    ((301, 399), [(300, "snapshot")]),
    ((650, 10_000), [(600, "snapshot"), (700, "commit")]),
    ((700, 700), [(600, "snapshot"), (700, "commit")]),
    ((5_000, 6_000), [(600, "snapshot")]),
    # a snapshot inside the window but after A does not replace the one before A
    ((250, 650), [(0, "snapshot"), (300, "snapshot"), (400, "commit"), (500, "gesture"),
                  (600, "snapshot")]),
    ((0, 700), [(f["t_ms"], f["type"]) for f in FRAMES]),
]


def test_time_windows(stack):
    canvas = new_canvas()
    document = replay_document()
    record = created(create_replay(stack, canvas, document))
    for (low, high), expected in WINDOWS:
        got = _content(stack, canvas, record["id"], f"?from_ms={low}&to_ms={high}")
        assert got.status_code == 200, got.text
        window = got.json()
        assert _times(window) == expected, (low, high)
        # everything but the keyframes is the submitted document
        assert {k: v for k, v in window.items() if k != "keyframes"} == \
            {k: v for k, v in document.items() if k != "keyframes"}
        # the frames are the submitted frames, data included
        assert all(frame in FRAMES for frame in window["keyframes"])


def test_open_ended_windows(stack):
    canvas = new_canvas()
    record = created(create_replay(stack, canvas))
    only_from = _content(stack, canvas, record["id"], "?from_ms=450").json()
    assert _times(only_from) == [(300, "snapshot"), (500, "gesture"), (600, "snapshot"),
                                 (700, "commit")]
    only_to = _content(stack, canvas, record["id"], "?to_ms=150").json()
    assert _times(only_to) == [(0, "snapshot"), (100, "commit")]


def test_window_with_equal_timestamps_does_not_repeat_the_snapshot(stack):
    frames = [{"t_ms": 0, "type": "snapshot", "data": {"i": 0}},
              {"t_ms": 100, "type": "commit", "data": {"i": 1}},
              {"t_ms": 100, "type": "snapshot", "data": {"i": 2}},
              {"t_ms": 100, "type": "commit", "data": {"i": 3}},
              {"t_ms": 200, "type": "gesture", "data": {"i": 4}}]
    canvas = new_canvas()
    record = created(create_replay(stack, canvas, replay_document(frames)))
    window = _content(stack, canvas, record["id"], "?from_ms=100&to_ms=200").json()
    assert [f["data"]["i"] for f in window["keyframes"]] == [1, 2, 3, 4]


def test_window_without_a_snapshot_before_it(stack):
    frames = [{"t_ms": 10, "type": "commit", "data": {}},
              {"t_ms": 20, "type": "gesture", "data": {}},
              {"t_ms": 30, "type": "snapshot", "data": {}}]
    canvas = new_canvas()
    record = created(create_replay(stack, canvas, replay_document(frames)))
    window = _content(stack, canvas, record["id"], "?from_ms=15&to_ms=25").json()
    assert _times(window) == [(20, "gesture")]


def test_bad_windows_are_422(stack):
    canvas = new_canvas()
    record = created(create_replay(stack, canvas))
    for query in ("?from_ms=500&to_ms=100", "?from_ms=-1", "?to_ms=abc"):
        assert_error(_content(stack, canvas, record["id"], query), 422)
    preview = created(create_preview(stack, canvas))
    assert_error(_content(stack, canvas, preview["id"], "?from_ms=0&to_ms=10"), 422)


def _frames_with(index: int, **changes: object) -> list[dict]:  # type: ignore[type-arg]
    frames = [dict(f) for f in FRAMES]
    frames[index] = {**frames[index], **changes}
    return frames


INVALID_KEYFRAMES = [
    (_frames_with(3, t_ms=150), 3),          # decreasing t_ms
    (_frames_with(2, t_ms=-5), 2),           # negative t_ms
    (_frames_with(5, type="zoom"), 5),       # unknown type
    (_frames_with(5, type=["snapshot"]), 5),  # a list (unhashable: was a 500)
    (_frames_with(3, type={"a": 1}), 3),     # an object, likewise
    (_frames_with(4, t_ms=400.5), 4),        # not an integer
    (_frames_with(6, t_ms="600"), 6),        # a string
    (_frames_with(1, t_ms=True), 1),         # a boolean is not an integer
    (_frames_with(0, rev=-1), 0),            # negative keyframe rev
    ([*FRAMES[:7], {"type": "commit"}], 7),  # t_ms missing
    ([*FRAMES[:2], "snapshot"], 2),          # not an object
]


def test_invalid_keyframes_are_422_naming_the_index(local):
    for frames, index in INVALID_KEYFRAMES:
        error = assert_error(create_replay(local, new_canvas(), replay_document(frames)), 422)
        assert error["message"].startswith(f"keyframes[{index}]"), error["message"]


def test_invalid_replays_are_422_and_keep_nothing(stack):
    tenant = new_tenant()
    headers = {**stack.headers(tenant), "Content-Type": "application/json"}
    bodies = [
        b"{not json", b"", b"[]", b'"replay"',
        orjson.dumps({"keyframes": FRAMES}),                         # rev missing
        orjson.dumps({"rev": -1, "keyframes": FRAMES}),              # negative rev
        orjson.dumps({"rev": 1}),                                    # keyframes missing
        orjson.dumps({"rev": 1, "keyframes": {"t_ms": 0}}),          # not a list
        orjson.dumps({"rev": 1, "keyframes": FRAMES, "mode": "x"}),  # unknown mode
        orjson.dumps(replay_document(_frames_with(3, t_ms=150))),
    ]
    for body in bodies:
        response = stack.client.post(url(new_canvas(), "/replay"), content=body, headers=headers)
        assert response.status_code == 422, body
        assert_error(response, 422)
    assert_nothing_kept(stack, tenant)


def test_over_max_replay_bytes_is_413_and_keeps_nothing(make_stack, stack_name):
    stack = make_stack(stack_name, max_replay_bytes=500)
    tenant = new_tenant()
    raw = orjson.dumps(replay_document())
    assert len(raw) > 500
    headers = {**stack.headers(tenant), "Content-Type": "application/json"}
    response = stack.client.post(url(new_canvas(), "/replay"), content=raw, headers=headers)
    assert_error(response, 413)
    chunked = stack.client.post(url(new_canvas(), "/replay"), headers=headers,
                                content=iter([raw[:300], raw[300:]]))
    assert_error(chunked, 413)
    assert_nothing_kept(stack, tenant)

    small = orjson.dumps(replay_document(FRAMES[:1]))
    assert len(small) <= 500
    created(stack.client.post(url(new_canvas(), "/replay"), content=small, headers=headers))


# ---- bounds of times and revisions ----------------------------------------------------

MAX_INT = 2**53


def test_t_ms_and_keyframe_rev_are_bounded_at_create(stack):
    tenant = new_tenant()
    for changes in ({"t_ms": MAX_INT + 1}, {"t_ms": 2**64 - 1}, {"rev": MAX_INT + 1}):
        frames = [*FRAMES[:7], {**FRAMES[7], **changes}]
        document = {**replay_document(frames), "rev": MAX_INT}
        error = assert_error(create_replay(stack, new_canvas(), document, tenant=tenant), 422,
                             "replay.invalid")
        assert error["message"].startswith("keyframes[7]"), error
    assert_nothing_kept(stack, tenant)


def test_open_ended_window_reaches_the_largest_t_ms(stack):
    canvas = new_canvas()
    frames = [*FRAMES, {"t_ms": MAX_INT, "rev": 40, "type": "commit", "data": {"n": 8}}]
    record = created(create_replay(stack, canvas, replay_document(frames)))
    window = _content(stack, canvas, record["id"], "?from_ms=650").json()
    assert _times(window) == [(600, "snapshot"), (700, "commit"), (MAX_INT, "commit")]
    last = _content(stack, canvas, record["id"], f"?from_ms={MAX_INT}").json()
    assert _times(last) == [(600, "snapshot"), (MAX_INT, "commit")]


def test_from_ms_alone_past_every_keyframe_is_the_last_snapshot(stack):
    """No to_ms was sent: the window is open-ended, not "to_ms must be >= from_ms"."""
    canvas = new_canvas()
    record = created(create_replay(stack, canvas))
    for huge in (2**53, 2**63, 2**64 + 5, 10**30):
        got = _content(stack, canvas, record["id"], f"?from_ms={huge}")
        assert got.status_code == 200, got.text
        assert _times(got.json()) == [(600, "snapshot")]
    both = _content(stack, canvas, record["id"], f"?from_ms={2**63}&to_ms=5")
    assert "to_ms must be >= from_ms" in assert_error(both, 422)["message"]


def test_revisions_after_the_replays_rev_are_422(stack):
    tenant = new_tenant()
    late_rev_from = replay_document(rev=42, rev_from=43)
    error = assert_error(create_replay(stack, new_canvas(), late_rev_from, tenant=tenant), 422,
                         "replay.invalid")
    assert "rev_from (43) is greater than rev (42)" in error["message"]
    # FRAMES carry revs 30..37: a replay ending at rev 35 cannot hold keyframes of 36 and 37
    error = assert_error(create_replay(stack, new_canvas(), replay_document(rev=35),
                                       tenant=tenant), 422, "replay.invalid")
    assert error["message"] == "keyframes[7].rev (37) is greater than rev (35)"
    assert_nothing_kept(stack, tenant)
    created(create_replay(stack, new_canvas(), replay_document(rev=37, rev_from=37)))
