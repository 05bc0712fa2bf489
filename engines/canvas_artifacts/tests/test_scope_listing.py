"""GET /artifacts and GET /canvases: listing across canvases, on both stacks."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
)


def pages(stack: Stack, path: str, tenant: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor."""
    found, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = stack.client.get(path, params=query, headers=stack.headers(tenant,
                                                                              role="viewer"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        found.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def ids(stack: Stack, tenant: str, **params: Any) -> list[str]:
    return [item["id"] for page in pages(stack, "/artifacts", tenant, **params) for item in page]


def test_artifacts_lists_the_tenant_env_newest_first_with_filters(stack: Stack) -> None:
    tenant, c1, c2 = new_tenant(), new_canvas(), new_canvas()
    a = created(create_preview(stack, c1, tenant=tenant))
    b = created(create_replay(stack, c2, tenant=tenant))
    time.sleep(0.02)
    middle = datetime.now(UTC)
    time.sleep(0.02)
    c = created(create_audit(stack, c1, tenant=tenant))
    d = created(create_preview(stack, c2, tenant=tenant))
    gone = created(create_preview(stack, c2, tenant=tenant))
    assert stack.client.delete(f"/canvas/{c2}/artifacts/{gone['id']}",
                               headers=stack.headers(tenant)).status_code == 204
    created(create_preview(stack, c1, tenant=new_tenant()))  # another tenant
    created(create_preview(stack, c1, tenant=tenant, env="prod"))  # another env

    newest_first = [d["id"], c["id"], b["id"], a["id"]]
    assert ids(stack, tenant) == newest_first
    assert [len(p) for p in pages(stack, "/artifacts", tenant, limit=3)] == [3, 1]
    assert ids(stack, tenant, limit=1) == newest_first
    assert ids(stack, tenant, kind="preview") == [d["id"], a["id"]]
    assert ids(stack, tenant, canvas_id=c1) == [c["id"], a["id"]]
    assert ids(stack, tenant, canvas_id=c2, kind="replay") == [b["id"]]
    assert ids(stack, tenant, created_after=middle.isoformat()) == [d["id"], c["id"]]
    assert ids(stack, tenant, created_before=middle.isoformat()) == [b["id"], a["id"]]
    naive = middle.replace(tzinfo=None).isoformat()  # no offset: UTC
    assert ids(stack, tenant, created_before=naive) == [b["id"], a["id"]]
    assert ids(stack, tenant, created_after=(middle - timedelta(days=1)).isoformat(),
               created_before=middle.isoformat(), kind="replay") == [b["id"]]
    listed = pages(stack, "/artifacts", tenant)[0]
    assert listed[0] == d, "items are the full artifact records"


def test_artifacts_list_bad_queries_and_auth(stack: Stack) -> None:
    headers = stack.headers(role="viewer")
    for query in ("kind=video", "limit=0", "limit=201", "cursor=%00%01", "canvas_id=../x",
                  "created_after=yesterday", "created_after=2026-01-02T00:00:00Z"
                  "&created_before=2026-01-01T00:00:00Z"):
        assert_error(stack.client.get(f"/artifacts?{query}", headers=headers), 422)
    assert_error(stack.client.get("/artifacts"), 401)
    assert_error(stack.client.get("/canvases"), 401)
    other = {**stack.headers("t_acme"), "X-Tenant-Id": "t_beta"}
    assert_error(stack.client.get("/artifacts", headers=other), 403)
    assert_error(stack.client.get("/canvases", headers=other), 403)
    assert_error(stack.client.get("/canvases?limit=0", headers=headers), 422)


def test_canvases_lists_counts_and_latest_per_kind(stack: Stack) -> None:
    tenant = new_tenant()
    c1, c2, c3 = sorted(new_canvas() for _ in range(3))
    old = created(create_preview(stack, c1, rev=5, tenant=tenant))
    created(create_preview(stack, c1, rev=2, tenant=tenant))  # newer, lower rev
    replay = created(create_replay(stack, c1, tenant=tenant))
    audit = created(create_audit(stack, c2, tenant=tenant))
    gone = created(create_preview(stack, c3, tenant=tenant))
    assert stack.client.delete(f"/canvas/{c3}/artifacts/{gone['id']}",
                               headers=stack.headers(tenant)).status_code == 204
    created(create_preview(stack, new_canvas(), tenant=new_tenant()))
    created(create_preview(stack, c2, tenant=tenant, env="staging"))

    listed = [item for page in pages(stack, "/canvases", tenant) for item in page]
    assert listed == [
        {"canvas_id": c1, "artifact_count": 3,
         "counts": {"preview": 2, "replay": 1, "audit": 0},
         "latest": {"preview": old["id"], "replay": replay["id"], "audit": None}},
        {"canvas_id": c2, "artifact_count": 1,
         "counts": {"preview": 0, "replay": 0, "audit": 1},
         "latest": {"preview": None, "replay": None, "audit": audit["id"]}},
    ], "deleted artifacts (and a canvas holding only those) are left out"
    latest = stack.client.get(f"/canvas/{c1}/artifacts/latest?kind=preview",
                              headers=stack.headers(tenant)).json()
    assert latest["id"] == old["id"], "latest agrees with /latest"
    assert [[item["canvas_id"] for item in page]
            for page in pages(stack, "/canvases", tenant, limit=1)] == [[c1], [c2]]
    assert pages(stack, "/canvases", new_tenant()) == [[]]
