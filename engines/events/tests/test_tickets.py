"""SSE tickets: EventSource's way in. Issued to any reader, good for one stream only.

Streams run against the app served by real uvicorn on both stacks; the
refusals (all 401 before a stream starts) go through the TestClient.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import Stack, new_canvas
from engines.auth.mac import mac
from engines.auth.routing import RequestContext
from engines.auth.tokens import AuthContext, Caller
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    created,
    new_tenant,
)
from engines.events import tickets
from engines.events.tests.conftest import Live
from engines.events.tests.sse_client import SseReader


def ticket(stack: Stack, body: dict[str, Any] | None = None, *, tenant: str = "t_acme",
           env: str = "dev", role: str = "viewer") -> dict[str, Any]:
    response = stack.client.post("/events/tickets", json=body,
                                 headers=stack.headers(tenant, env, role=role))
    assert response.status_code == 200, response.text
    return response.json()


def open_with(live: Live, url: str, **headers: str) -> SseReader:
    reader = SseReader(live.url + url, headers).start()
    live.opened.append(reader)
    return reader


@pytest.mark.slow
def test_a_canvas_ticket_opens_that_canvas_stream_with_no_headers(live: Live) -> None:
    tenant, canvas, other = new_tenant(), new_canvas(), new_canvas()
    issued = ticket(live.stack, {"canvas_id": canvas}, tenant=tenant)
    assert issued["url"] == f"/canvas/{canvas}/artifacts/events?ticket={issued['ticket']}"
    assert issued["canvas_id"] == canvas
    reader = open_with(live, issued["url"])
    assert reader.next_comment() == "connected"
    assert reader.status == 200

    created(create_preview(live.stack, other, tenant=tenant))
    created(create_preview(live.stack, canvas, tenant="t_acme"))  # same canvas, other tenant
    mine = created(create_audit(live.stack, canvas, tenant=tenant))

    event = reader.next_event()
    assert (event.event, event.data["data"]["artifact_id"]) == ("artifact_written", mine["id"])
    assert event.data["routing"]["tenant_id"] == tenant
    assert reader.events_so_far() == []


@pytest.mark.slow
def test_a_tenant_ticket_follows_every_canvas_and_resumes_after_the_stream_ends(
        make_live: Any) -> None:
    live: Live = make_live(events_stream_max_seconds=1.5)
    tenant = new_tenant()
    issued = ticket(live.stack, tenant=tenant)
    assert issued["url"] == f"/artifacts/events?ticket={issued['ticket']}"
    assert issued["canvas_id"] is None
    first = open_with(live, issued["url"])
    assert first.next_comment() == "connected"
    a = created(create_preview(live.stack, new_canvas(), tenant=tenant))
    seen = first.next_event()
    assert seen.data["data"]["artifact_id"] == a["id"]

    first._thread.join(timeout=5)  # EVENTS_STREAM_MAX_SECONDS: the server ends the stream
    assert not first._thread.is_alive()
    b = created(create_audit(live.stack, new_canvas(), tenant=tenant))
    # what EventSource does on its own: the same URL again, with Last-Event-ID
    again = open_with(live, issued["url"], **{"Last-Event-ID": str(seen.id)})
    assert again.next_comment() == "connected"
    resumed = again.next_event()
    assert (resumed.id, resumed.data["data"]["artifact_id"]) == (seen.id + 1, b["id"])
    assert again.events_so_far() == []


def test_a_ticket_names_one_stream_of_one_tenant_and_env(stack: Stack) -> None:
    canvas = new_canvas()
    for_canvas = ticket(stack, {"canvas_id": canvas})["ticket"]
    for_tenant = ticket(stack)["ticket"]
    client = stack.client

    def refused(path: str, **headers: str) -> dict[str, Any]:
        return assert_error(client.get(path, headers=headers), 401)

    assert refused(f"/canvas/{new_canvas()}/artifacts/events?ticket={for_canvas}")[
        "code"] == "auth.ticket_invalid"
    assert refused(f"/artifacts/events?ticket={for_canvas}")["code"] == "auth.ticket_invalid"
    assert refused(f"/canvas/{canvas}/artifacts/events?ticket={for_tenant}")[
        "code"] == "auth.ticket_invalid"
    assert refused(f"/artifacts/events?ticket={for_tenant}", **{"X-Tenant-Id": "t_beta"})[
        "code"] == "auth.ticket_invalid"
    assert refused(f"/artifacts/events?ticket={for_tenant}", **{"X-Env": "prod"})[
        "code"] == "auth.ticket_invalid"
    assert refused(f"/artifacts/events?ticket={for_tenant}&ticket={for_tenant}")[
        "code"] == "auth.ticket_invalid"


def test_altered_forged_and_expired_tickets_are_401(stack: Stack) -> None:
    issued = ticket(stack, {"ttl_seconds": 1})["ticket"]
    payload, signature = issued.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    jwt_signed = mac(stack.settings.signing_key().encode(), ["engines-sse-ticket-v1"])
    for bad in (f"{flipped}.{signature}", f"{payload}.{signature[:-1]}", payload, "x.y",
                f"{payload}.{jwt_signed}", "%00", "a" * 3000):
        error = assert_error(stack.client.get("/artifacts/events", params={"ticket": bad}), 401)
        assert error["code"] == "auth.ticket_invalid", bad
    # issued 1.1 s ago with a 1 s life (the clock seam: no waiting)
    caller = Caller(auth=AuthContext(actor_id="u_ana", tenant_ids=frozenset({"t_acme"})),
                    ctx=RequestContext(tenant_id="t_acme", env="dev", project_id="p_main",
                                       request_id="req_1", correlation_id="cor_1"),
                    role="viewer")
    lapsed = tickets.issue(stack.settings, caller, tickets.TicketRequest(ttl_seconds=1),
                           now=time.time() - 1.1).ticket
    expired = assert_error(stack.client.get(f"/artifacts/events?ticket={lapsed}"), 401)
    assert expired["code"] == "auth.ticket_expired"


def test_ticket_requests_are_checked(stack: Stack) -> None:
    before = time.time()
    issued = ticket(stack, {"canvas_id": "c_1", "ttl_seconds": 300})
    from datetime import datetime

    expires = datetime.fromisoformat(issued["expires_at"]).timestamp()
    assert before + 299 <= expires <= time.time() + 300
    assert set(issued) == {"ticket", "expires_at", "url", "canvas_id"}
    headers = stack.headers(role="viewer")
    for body in ({"ttl_seconds": 301}, {"ttl_seconds": 0}, {"canvas_id": "../x"},
                 {"scope": "all"}, {"canvas_id": 5}):
        assert_error(stack.client.post("/events/tickets", json=body, headers=headers), 422)
    assert_error(stack.client.post("/events/tickets", content=b"canvas",
                                   headers={**headers, "Content-Type": "text/plain"}), 415)
    assert_error(stack.client.post("/events/tickets", json={}), 401)
    other = {**stack.headers("t_acme"), "X-Tenant-Id": "t_beta"}
    assert_error(stack.client.post("/events/tickets", json={}, headers=other), 403)
    # the ticket grants nothing but a stream: it is no bearer token
    assert_error(stack.client.get("/canvas/c_1/artifacts", headers={
        "Authorization": f"Bearer {issued['ticket']}", "X-Tenant-Id": "t_acme",
        "X-Env": "dev", "X-Project-Id": "p_main"}), 401)
