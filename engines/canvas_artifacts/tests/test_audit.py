"""Audit reports: the placeholder, stored reports, and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    create_audit,
    created,
    new_tenant,
    url,
)

REPORT = {
    "v": 1, "kind": "render", "status": "failed",
    "checks": [{"id": "contrast", "result": "fail"}, {"id": "overflow", "result": "pass"}],
    "findings": [{"check": "contrast", "severity": "error", "node": "n_12"}],
    "summary": {"errors": 1, "warnings": 0},
    "generated_at": "2024-05-01T12:30:00+00:00",
}


def _content(stack, canvas: str, artifact_id: str):
    response = stack.client.get(url(canvas, f"/{artifact_id}/content"), headers=stack.headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_empty_body_creates_the_placeholder(stack):
    canvas = new_canvas()
    before = datetime.now(UTC)
    record = created(create_audit(stack, canvas, rev=9))
    after = datetime.now(UTC)
    assert record["kind"] == "audit"
    assert record["rev"] == 9
    assert record["mime_type"] == "application/json"
    assert record["meta"]["placeholder"] is True
    assert record["meta"]["status"] == "pending"

    document = _content(stack, canvas, record["id"])
    generated_at = document.pop("generated_at")
    assert document == {"v": 1, "kind": "render", "status": "pending", "checks": [],
                        "findings": [], "summary": {"errors": 0, "warnings": 0}}
    stamp = datetime.fromisoformat(generated_at)
    assert stamp.tzinfo is not None
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)


def test_whitespace_body_is_the_placeholder_too(stack):
    canvas = new_canvas()
    headers = {**stack.headers(), "Content-Type": "application/json"}
    response = stack.client.post(url(canvas, "/audit?rev=1"), content=b"  \n", headers=headers)
    record = created(response)
    assert _content(stack, canvas, record["id"])["status"] == "pending"


def test_valid_report_is_stored_and_returned(stack):
    canvas = new_canvas()
    record = created(create_audit(stack, canvas, rev=4, body=orjson.dumps(REPORT)))
    assert record["meta"]["placeholder"] is False
    assert record["meta"]["status"] == "failed"
    assert record["meta"]["errors"] == 1 and record["meta"]["warnings"] == 0
    assert _content(stack, canvas, record["id"]) == REPORT


def test_invalid_reports_are_422_and_keep_nothing(stack):
    tenant = new_tenant()
    headers = {**stack.headers(tenant), "Content-Type": "application/json"}
    invalid = [
        {**REPORT, "v": 2},
        {**REPORT, "status": "bogus"},
        {**REPORT, "unexpected": True},
        {**REPORT, "summary": {"errors": -1, "warnings": 0}},
        {**REPORT, "summary": {"errors": "1", "warnings": 0}},
        {**REPORT, "checks": "none"},
        {**REPORT, "generated_at": "yesterday"},
        {k: v for k, v in REPORT.items() if k != "findings"},
        [REPORT],
    ]
    for body in [*map(orjson.dumps, invalid), b"{not json"]:
        response = stack.client.post(url(new_canvas(), "/audit?rev=1"), content=body,
                                     headers=headers)
        assert response.status_code == 422, body
        assert_error(response, 422)
    assert_nothing_kept(stack, tenant)


def test_rev_is_required_and_non_negative(stack):
    for query in ("", "?rev=-3", "?rev=x"):
        response = stack.client.post(url(new_canvas(), f"/audit{query}"), headers=stack.headers())
        assert_error(response, 422)


def test_over_max_audit_bytes_is_413_and_keeps_nothing(make_stack):
    stack = make_stack("local-sqlite", max_audit_bytes=200)
    tenant = new_tenant()
    body = orjson.dumps(REPORT)
    assert len(body) > 200
    headers = {**stack.headers(tenant), "Content-Type": "application/json"}
    response = stack.client.post(url(new_canvas(), "/audit?rev=1"), content=body,
                                 headers=headers)
    assert_error(response, 413)
    assert_nothing_kept(stack, tenant)
