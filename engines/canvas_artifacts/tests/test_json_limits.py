"""Limits on hostile JSON: keyframe count and nesting depth, with nothing kept."""

from __future__ import annotations

from typing import Any

import orjson

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    create_audit,
    create_replay,
    created,
    new_tenant,
    replay_document,
)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"n": value}
    return value


def _frames(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"t_ms": t, "type": "commit", "data": {}, **extra} for t in range(count)]


def test_too_many_keyframes_is_422_and_keeps_nothing(make_stack, stack_name):
    stack = make_stack(stack_name, max_keyframes=10)
    tenant = new_tenant()
    response = create_replay(stack, new_canvas(), replay_document(_frames(11)), tenant=tenant)
    assert_error(response, 422, "replay.too_many_keyframes")
    assert_nothing_kept(stack, tenant)
    created(create_replay(stack, new_canvas(), replay_document(_frames(10)), tenant=tenant))


def test_deep_keyframe_data_is_422_naming_the_keyframe(make_stack):
    stack = make_stack("local-sqlite", max_json_depth=8)
    tenant = new_tenant()
    frames = _frames(3)
    frames[2]["data"] = _nested(10)
    response = create_replay(stack, new_canvas(), replay_document(frames), tenant=tenant)
    error = assert_error(response, 422)
    assert error["message"].startswith("keyframes[2]") and "nesting" in error["message"]
    assert_nothing_kept(stack, tenant)


def test_deep_replay_summary_is_422(make_stack):
    stack = make_stack("local-sqlite", max_json_depth=8)
    tenant = new_tenant()
    document = {**replay_document(_frames(2)), "summary": _nested(10)}
    assert_error(create_replay(stack, new_canvas(), document, tenant=tenant), 422,
                 "request.too_deep")
    assert_nothing_kept(stack, tenant)


def test_deep_audit_and_media_bodies_are_422(make_stack):
    stack = make_stack("local-sqlite", max_json_depth=8)
    tenant = new_tenant()
    report = {"v": 1, "kind": "render", "status": "passed", "checks": [_nested(10)],
              "findings": [], "summary": {"errors": 0, "warnings": 0},
              "generated_at": "2026-11-28T00:00:00Z"}
    assert_error(create_audit(stack, new_canvas(), body=orjson.dumps(report),
                              content_type="application/json", tenant=tenant), 422,
                 "request.too_deep")
    response = stack.client.post("/media-v2/assets", headers=stack.headers(tenant),
                                 json={"source_uri": "https://x.example/a.png",
                                       "meta": _nested(10)})
    assert_error(response, 422, "request.too_deep")
    assert_nothing_kept(stack, tenant)


def test_depth_limit_is_exact(make_stack):
    """Depth counts the whole document: object, keyframes list, keyframe, then data."""
    stack = make_stack("local-sqlite", max_json_depth=8)
    frames = _frames(1)
    frames[0]["data"] = _nested(5)
    created(create_replay(stack, new_canvas(), replay_document(frames)))
    frames[0]["data"] = _nested(6)
    assert_error(create_replay(stack, new_canvas(), replay_document(frames)), 422)
