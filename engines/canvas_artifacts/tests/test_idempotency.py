"""Idempotency-Key on canvas creates: a retry replays, a different request conflicts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import JPEG, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    blob_keys,
    create_audit,
    create_preview,
    created,
    new_tenant,
    row_counts,
    url,
)


def test_retry_replays_the_first_response_and_writes_nothing(stack):
    tenant = new_tenant()
    canvas = new_canvas()
    first = created(create_preview(stack, canvas, tenant=tenant, Idempotency_Key="k-1"))
    blobs, rows = blob_keys(stack), row_counts(stack, tenant)

    again = create_preview(stack, canvas, tenant=tenant, Idempotency_Key="k-1")
    assert again.status_code == 201
    assert again.json() == first
    assert blob_keys(stack) == blobs
    assert row_counts(stack, tenant) == rows

    listed = stack.client.get(url(canvas), headers=stack.headers(tenant)).json()["items"]
    assert [r["id"] for r in listed] == [first["id"]]


def test_same_key_for_a_different_request_is_409(stack):
    tenant = new_tenant()
    canvas = new_canvas()
    created(create_preview(stack, canvas, rev=1, tenant=tenant, Idempotency_Key="k-2"))
    blobs, rows = blob_keys(stack), row_counts(stack, tenant)
    different = [
        create_preview(stack, canvas, rev=1, body=JPEG, content_type="image/jpeg",
                       tenant=tenant, Idempotency_Key="k-2"),
        create_preview(stack, canvas, rev=2, tenant=tenant, Idempotency_Key="k-2"),
        create_preview(stack, new_canvas(), rev=1, tenant=tenant, Idempotency_Key="k-2"),
        create_audit(stack, canvas, rev=1, tenant=tenant, Idempotency_Key="k-2"),
    ]
    for response in different:
        assert_error(response, 409)
    assert blob_keys(stack) == blobs
    assert row_counts(stack, tenant) == rows


def test_keys_are_scoped_to_tenant_and_env(stack):
    canvas = new_canvas()
    tenant = new_tenant()
    other = new_tenant()
    a = created(create_preview(stack, canvas, tenant=tenant, Idempotency_Key="shared"))
    b = created(create_preview(stack, canvas, tenant=other, Idempotency_Key="shared"))
    c = created(create_preview(stack, canvas, tenant=tenant, env="prod",
                               Idempotency_Key="shared"))
    assert len({a["id"], b["id"], c["id"]}) == 3
    assert (b["tenant_id"], c["env"]) == (other, "prod")


def test_concurrent_retries_with_one_key_make_exactly_one_artifact(stack):
    tenant = new_tenant()
    canvas = new_canvas()
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(
            lambda _: create_preview(stack, canvas, tenant=tenant, Idempotency_Key="race"),
            range(8)))
    bodies = [created(r) for r in responses]
    assert all(body == bodies[0] for body in bodies)
    listed = stack.client.get(url(canvas), headers=stack.headers(tenant)).json()["items"]
    assert [r["id"] for r in listed] == [bodies[0]["id"]]
    assert row_counts(stack, tenant)["canvas_artifacts"] == 1
    assert len([k for k in blob_keys(stack) if canvas in k]) == 1


# What the record keeps about who sent it and where it is routed: the same key and
# body with any of these changed is another request (409), never a replay.
CALLER_CHANGES = [
    {"X_Project_Id": "p_other"},
    {"X_Workspace_Id": "w_other"},
    {"X_Surface_Id": "s_other"},
    {"X_App_Id": "a_other"},
    {"sub": "u_bob"},
]


def test_same_key_and_body_from_another_caller_or_route_is_409(stack):
    tenant = new_tenant()
    canvas = new_canvas()
    routing = {"X_Workspace_Id": "w_main", "X_Surface_Id": "s_main", "X_App_Id": "a_main"}
    first = created(create_preview(stack, canvas, tenant=tenant, Idempotency_Key="k-who",
                                   **routing))
    blobs, rows = blob_keys(stack), row_counts(stack, tenant)
    for change in CALLER_CHANGES:
        response = create_preview(stack, canvas, tenant=tenant, Idempotency_Key="k-who",
                                  **{**routing, **change})
        assert_error(response, 409, "idempotency.key_reused")
    assert blob_keys(stack) == blobs
    assert row_counts(stack, tenant) == rows
    # per-request ids are not part of the request: a retry with new ones replays
    again = create_preview(stack, canvas, tenant=tenant, Idempotency_Key="k-who",
                           X_Request_Id="retry-1", X_Correlation_Id="retry-1", **routing)
    assert again.status_code == 201 and again.json() == first
    assert again.headers["idempotent-replayed"] == "true"
