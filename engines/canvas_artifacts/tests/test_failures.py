"""A failing metadata write fails the request and leaves nothing anywhere."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection

from conftest import JPEG, PNG, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    blob_keys,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
    replay_document,
    row_counts,
    url,
)
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend
from engines.lineage.nexus.schemas import NexusDocument


class NexusDown(RuntimeError):
    """What the failing backend raises after its writes went through."""


class Raising(SqlNexusBackend):
    """Writes the document and its event, then fails: the worst moment to fail."""

    def __init__(self) -> None:
        self.calls = 0

    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        self.calls += 1
        super().record(tx, document, event)
        raise NexusDown("nexus write failed after the document was written")


def test_failing_nexus_fails_every_create_and_keeps_nothing(make_stack, stack_name):
    nexus = Raising()
    stack = make_stack(stack_name, nexus=nexus)
    tenant = new_tenant()
    canvas = new_canvas()
    attempts = {
        "raw preview": lambda: create_preview(stack, canvas, tenant=tenant),
        "multipart preview": lambda: stack.client.post(
            url(canvas, "/preview?rev=1"), headers=stack.headers(tenant),
            files={"file": ("a.jpg", JPEG, "image/jpeg")}),
        "render-ref preview": lambda: stack.client.post(
            url(canvas, "/preview?rev=1"), headers=stack.headers(tenant),
            json={"uri": "https://renders.example.com/a.png"}),
        "replay": lambda: create_replay(stack, canvas, replay_document(), tenant=tenant),
        "audit": lambda: create_audit(stack, canvas, tenant=tenant),
        "idempotent audit": lambda: create_audit(stack, canvas, tenant=tenant,
                                                 Idempotency_Key="k-1"),
    }
    for what, attempt in attempts.items():
        response = attempt()
        # a metadata outage is 503 (docs/http.md), with the one error envelope
        assert response.status_code == 503, (what, response.status_code, response.text)
        assert_error(response, 503)
        assert "nexus write failed" not in response.text  # internals stay in the log
    assert nexus.calls == len(attempts)

    assert_nothing_kept(stack, tenant)
    listed = stack.client.get(url(canvas), headers=stack.headers(tenant))
    assert listed.json() == {"items": [], "next_cursor": None}


def test_after_a_failure_the_same_request_can_succeed(make_stack, stack_name, twin):
    """A retry with the same idempotency key is not answered with the failure."""
    failing = make_stack(stack_name, nexus=Raising())
    tenant = new_tenant()
    canvas = new_canvas()
    body = orjson.dumps(replay_document())
    headers = {**failing.headers(tenant), "Content-Type": "application/json",
               "Idempotency-Key": "retry-me"}
    first = failing.client.post(url(canvas, "/replay"), content=body, headers=headers)
    assert first.status_code >= 500
    assert blob_keys(failing) == []

    healthy = twin(failing, nexus=SqlNexusBackend())
    retried = healthy.client.post(url(canvas, "/replay"), content=body, headers=headers)
    record = created(retried)
    again = healthy.client.post(url(canvas, "/replay"), content=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == record
    listed = healthy.client.get(url(canvas), headers=healthy.headers(tenant)).json()
    assert [r["id"] for r in listed["items"]] == [record["id"]]


def test_preview_failure_after_a_success_only_removes_its_own_blob(make_stack, stack_name,
                                                                   twin):
    healthy = make_stack(stack_name)
    kept = created(create_preview(healthy, new_canvas()))
    before = blob_keys(healthy)
    assert len(before) == 1 and kept["uri"].endswith(before[0])

    tenant_rows = row_counts(healthy, "t_acme")
    failing = twin(healthy, nexus=Raising())
    response = create_preview(failing, new_canvas(), body=PNG)
    assert response.status_code >= 500
    assert blob_keys(failing) == before
    assert row_counts(healthy, "t_acme") == tenant_rows
    got = healthy.client.get(url(kept["canvas_id"], f"/{kept['id']}/content"),
                             headers=healthy.headers())
    assert got.content == PNG
