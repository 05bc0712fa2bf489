"""Tenant and env isolation: another scope's id is exactly a missing id."""

from __future__ import annotations

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    create_audit,
    create_preview,
    create_replay,
    created,
    url,
)

MISSING_ID = "art_0000000000000000000000000"


def _without_request_id(response) -> dict:
    body = response.json()
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return {**body, "error": {k: v for k, v in body["error"].items() if k != "request_id"}}


def _reads(canvas: str, artifact_id: str) -> list[str]:
    return [url(canvas, f"/{artifact_id}"), url(canvas, f"/{artifact_id}/content"),
            url(canvas, f"/{artifact_id}/content?from_ms=0&to_ms=10"),
            url(canvas, f"/{artifact_id}/lineage")]


def _assert_invisible(stack, canvas: str, records: list[dict], headers: dict) -> None:
    """Every read of every record answers what a missing id answers, byte for byte."""
    for record in records:
        pairs = zip(_reads(canvas, record["id"]), _reads(canvas, MISSING_ID), strict=True)
        for foreign, missing in pairs:
            got = stack.client.get(foreign, headers=headers, follow_redirects=False)
            absent = stack.client.get(missing, headers=headers, follow_redirects=False)
            assert got.status_code == 404, foreign
            assert absent.status_code == 404, missing
            assert _without_request_id(got) == _without_request_id(absent)
            assert got.headers["content-type"] == absent.headers["content-type"]
    listed = stack.client.get(url(canvas), headers=headers)
    assert listed.status_code == 200
    assert listed.json() == {"items": [], "next_cursor": None}
    for kind in ("preview", "replay", "audit"):
        latest = stack.client.get(url(canvas, f"/latest?kind={kind}"), headers=headers)
        assert latest.status_code == 404
    # nor through the media_v2 records the artifacts registered
    for record in records:
        for path in (f"/media-v2/artifacts/{record['media_artifact_id']}",
                     f"/media-v2/assets/{record['media_asset_id']}"):
            assert stack.client.get(path, headers=headers).status_code == 404, path
    assets = stack.client.get("/media-v2/assets", headers=headers).json()["items"]
    assert records[0]["media_asset_id"] not in {a["id"] for a in assets}


def _seed(stack, canvas: str, **scope: str) -> list[dict]:
    return [created(create_preview(stack, canvas, **scope)),
            created(create_replay(stack, canvas, **scope)),
            created(create_audit(stack, canvas, **scope)),
            created(stack.client.post(url(canvas, "/preview?rev=1"),
                                      headers=stack.headers(**scope),
                                      json={"uri": "https://renders.example.com/a.png"}))]


def test_another_tenant_sees_nothing(stack):
    canvas = new_canvas()
    records = _seed(stack, canvas)
    _assert_invisible(stack, canvas, records, stack.headers("t_beta"))
    # a token valid for both tenants, asking as t_beta, sees nothing of t_acme either
    both = {**stack.headers("t_beta"),
            "Authorization": f"Bearer {stack.token(['t_acme', 't_beta'])}"}
    _assert_invisible(stack, canvas, records, both)
    # and t_acme still sees all of it
    mine = stack.client.get(url(canvas), headers=stack.headers()).json()["items"]
    assert {r["id"] for r in mine} == {r["id"] for r in records}


def test_another_env_sees_nothing(stack):
    canvas = new_canvas()
    records = _seed(stack, canvas, env="prod")
    for env in ("dev", "staging"):
        _assert_invisible(stack, canvas, records, stack.headers(env=env))
    mine = stack.client.get(url(canvas), headers=stack.headers(env="prod")).json()["items"]
    assert len(mine) == len(records)


def test_same_canvas_id_in_two_tenants_stays_apart(stack):
    canvas = new_canvas()
    acme = created(create_preview(stack, canvas, rev=1))
    beta = created(create_preview(stack, canvas, rev=2, tenant="t_beta"))
    assert acme["uri"] != beta["uri"]
    assert "tenants/t_beta/dev/" in beta["uri"]
    assert acme["media_asset_id"] != beta["media_asset_id"]
    for tenant, mine in (("t_acme", acme), ("t_beta", beta)):
        listed = stack.client.get(url(canvas), headers=stack.headers(tenant)).json()["items"]
        assert [r["id"] for r in listed] == [mine["id"]]
        latest = stack.client.get(url(canvas, "/latest?kind=preview"),
                                  headers=stack.headers(tenant))
        assert latest.json()["id"] == mine["id"]


def test_a_foreign_tenant_header_is_refused_before_any_lookup(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    spoofed = {**stack.headers("t_beta"), "X-Tenant-Id": "t_acme"}
    response = stack.client.get(url(canvas, f"/{record['id']}"), headers=spoofed)
    assert response.status_code == 403
    write = stack.client.post(url(canvas, "/audit?rev=1"), headers=spoofed)
    assert write.status_code == 403
