"""Webhooks: the admin API, Standard Webhooks signatures, order, retries, SSRF refusals.

Signatures are checked with the `standardwebhooks` package, never with the
server's own code. The delivery worker is driven round by round
(`run_once`), so each test decides exactly when deliveries happen.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook as StandardWebhook

from conftest import Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    created,
    new_tenant,
)
from engines.events.tests.receiver import receiver
from engines.events.webhooks.delivery import DeliveryWorker

LAB = {"webhook_allow_http": True, "webhook_allow_private": True,
       "webhook_retry_schedule": [0.0, 0.0], "webhook_timeout_seconds": 0.5,
       "webhooks_enabled": False}


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def lab(request: pytest.FixtureRequest, make_stack: Callable[..., Stack]) -> Stack:
    """A stack that may deliver to a receiver on 127.0.0.1 over http."""
    return make_stack(request.param, **LAB)


def subscribe(stack: Stack, url: str, tenant: str, *, events: list[str] | None = None,
              **extra: Any) -> dict[str, Any]:
    response = stack.client.post("/webhooks", headers=stack.headers(tenant, role="admin"),
                                 json={"url": url, "events": events or ["artifact_written"],
                                       **extra})
    assert response.status_code == 201, response.text
    return response.json()


def deliver(stack: Stack, until: Callable[[], bool], *, rounds: int = 50,
            **overrides: Any) -> DeliveryWorker:
    """Run delivery rounds (as the background worker would) until `until()` holds."""
    settings = stack.settings.model_copy(update=overrides)
    worker = DeliveryWorker(stack.runtime.engine, settings)

    async def run() -> None:
        try:
            for _ in range(rounds):
                await worker.run_once()
                if until():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("condition not reached")
        finally:
            await worker.stop()

    asyncio.run(run())
    return worker


def attempts(stack: Stack, tenant: str, hook_id: str) -> list[dict[str, Any]]:
    response = stack.client.get(f"/webhooks/{hook_id}/deliveries",
                                headers=stack.headers(tenant, role="owner"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_delivery_is_signed_per_standard_webhooks(lab: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    with receiver() as hook:
        sub = subscribe(lab, hook.url, tenant)
        secret = sub["secret"]
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        record = created(create_audit(lab, canvas, tenant=tenant))
        deliver(lab, lambda: len(hook.requests) == 1)

    got = hook.requests[0]
    payload = StandardWebhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "artifact_written"
    assert payload["data"]["artifact_id"] == record["id"]
    assert payload["routing"]["canvas_id"] == canvas
    assert got.headers["webhook-id"] == payload["event_id"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        StandardWebhook(subscribe(lab, hook.url, tenant)["secret"]).verify(got.body, got.headers)
    [attempt] = attempts(lab, tenant, sub["id"])
    assert (attempt["outcome"], attempt["status_code"], attempt["attempt"]) == (
        "succeeded", 204, 1)
    assert attempt["event_id"] == payload["event_id"]


def test_filters_and_seq_order(lab: Stack) -> None:
    tenant, canvas, other = new_tenant(), new_canvas(), new_canvas()
    with receiver() as hook:
        sub = subscribe(lab, hook.url, tenant, events=["artifact_deleted", "artifact_written"],
                        canvas_id=canvas)
        deleted_only = subscribe(lab, hook.url + "?deleted", tenant, events=["artifact_deleted"])
        mine = [created(create_audit(lab, canvas, rev=i, tenant=tenant)) for i in range(4)]
        created(create_audit(lab, other, tenant=tenant))
        created(create_audit(lab, canvas, tenant=new_tenant()))
        deleted = lab.client.delete(f"/canvas/{canvas}/artifacts/{mine[0]['id']}",
                                    headers=lab.headers(tenant))
        assert deleted.status_code == 204
        deliver(lab, lambda: len(hook.requests) == 6)

    by_secret = {sub["secret"]: [], deleted_only["secret"]: []}
    for request in hook.requests:
        for secret, found in by_secret.items():
            try:
                found.append(StandardWebhook(secret).verify(request.body, request.headers))
            except Exception:  # noqa: BLE001, S112 - signed for the other subscription
                continue
    canvas_events = by_secret[sub["secret"]]
    assert [e["seq"] for e in canvas_events] == sorted(e["seq"] for e in canvas_events)
    assert [e["data"]["artifact_id"] for e in canvas_events] == [r["id"] for r in mine] + [
        mine[0]["id"]]
    assert [e["type"] for e in canvas_events][-1] == "artifact_deleted"
    assert [(e["type"], e["data"]["reason"]) for e in by_secret[deleted_only["secret"]]] == [
        ("artifact_deleted", "deleted")]
    assert len(canvas_events) + len(by_secret[deleted_only["secret"]]) == len(hook.requests)


def test_retries_after_500_and_timeout_then_succeeds_in_order(lab: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    with receiver([500, "hang"]) as hook:
        sub = subscribe(lab, hook.url, tenant)
        first = created(create_audit(lab, canvas, rev=1, tenant=tenant))
        second = created(create_audit(lab, canvas, rev=2, tenant=tenant))
        deliver(lab, lambda: len(hook.requests) == 4)

    ids = [orjson.loads(r.body)["data"]["artifact_id"] for r in hook.requests]
    assert ids == [first["id"], first["id"], first["id"], second["id"]]  # no overtaking
    assert len({r.headers["webhook-id"] for r in hook.requests[:3]}) == 1  # same message
    log = attempts(lab, tenant, sub["id"])  # newest first
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in reversed(log)] == [
        (1, "retrying", 500), (2, "retrying", None), (3, "succeeded", 204),
        (1, "succeeded", 204)]
    assert log[-2]["error"].startswith("timed out")
    assert log[-1]["error"] == "HTTP 500"
    assert all(a["duration_ms"] >= 0 for a in log)


def test_failed_deliveries_disable_the_subscription(lab: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    with receiver([500] * 50) as hook:
        sub = subscribe(lab, hook.url, tenant)
        for rev in range(3):
            created(create_audit(lab, canvas, rev=rev, tenant=tenant))

        def disabled() -> bool:
            listed = lab.client.get("/webhooks", headers=lab.headers(tenant, role="admin"))
            return listed.json()["items"][0]["status"] == "disabled"

        deliver(lab, disabled, webhook_disable_after=2)
        tried = len(hook.requests)
        deliver(lab, lambda: True, rounds=3, webhook_disable_after=2)
    assert tried == len(hook.requests) == 6  # 2 deliveries x 3 attempts, then nothing
    [listed] = lab.client.get("/webhooks", headers=lab.headers(tenant, role="admin")).json()[
        "items"]
    assert listed["id"] == sub["id"]
    assert "2 consecutive failed deliveries" in listed["disabled_reason"]
    assert "HTTP 500" in listed["disabled_reason"]
    assert [a["outcome"] for a in attempts(lab, tenant, sub["id"])][:1] == ["failed"]


def test_destination_checked_again_at_delivery(lab: Stack) -> None:
    """A subscription that passed the check (here: private allowed then) is refused when
    the address is not allowed at delivery time, and nothing is sent."""
    tenant = new_tenant()
    with receiver() as hook:
        sub = subscribe(lab, hook.url, tenant)
        created(create_audit(lab, new_canvas(), tenant=tenant))
        deliver(lab, lambda: bool(attempts(lab, tenant, sub["id"])),
                webhook_allow_private=False)
    assert hook.requests == []
    [attempt] = attempts(lab, tenant, sub["id"])
    assert attempt["outcome"] == "retrying"
    assert "loopback" in attempt["error"]


@pytest.mark.parametrize("url", [
    "http://example.com/hook", "https://127.0.0.1/hook", "https://localhost/hook",
    "https://10.1.2.3/hook", "https://192.168.0.10/hook", "https://169.254.169.254/latest",
    "https://[::1]/hook", "https://[fd00:ec2::254]/", "https://100.64.0.1/", "ftp://x/",
    "https://user:pw@example.com/", "not a url",
])
def test_destinations_refused_at_subscribe(make_stack: Callable[..., Stack], url: str) -> None:
    stack = make_stack("local-sqlite")
    response = stack.client.post("/webhooks", headers=stack.headers(role="admin"),
                                 json={"url": url, "events": ["artifact_written"]})
    assert_error(response, 422, "webhook.destination_refused")


def test_http_allowed_but_private_still_refused(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("local-sqlite", webhook_allow_http=True)
    response = stack.client.post("/webhooks", headers=stack.headers(role="admin"),
                                 json={"url": "http://127.0.0.1:9/", "events":
                                       ["artifact_written"]})
    assert "loopback" in assert_error(response, 422, "webhook.destination_refused")["message"]


def test_admin_api_roles_scope_and_validation(lab: Stack) -> None:
    tenant, other = new_tenant(), new_tenant()
    body = {"url": "http://127.0.0.1:9/hook", "events": ["artifact_written"]}
    assert_error(lab.client.post("/webhooks", json=body), 401)
    for role in ("member", "viewer"):
        assert_error(lab.client.post("/webhooks", json=body, headers=lab.headers(tenant,
                                                                                 role=role)),
                     403, "auth.role_forbidden")
        assert_error(lab.client.get("/webhooks", headers=lab.headers(tenant, role=role)), 403)
    admin = lab.headers(tenant, role="admin")
    for bad in ({**body, "events": []}, {**body, "events": ["artifact_read"]},
                {**body, "extra": 1}, {"events": ["artifact_written"]},
                {**body, "canvas_id": "../x"}):
        assert_error(lab.client.post("/webhooks", json=bad, headers=admin), 422)
    assert_error(lab.client.post("/webhooks", content=b"{", headers={
        **admin, "Content-Type": "application/json"}), 422)

    made = lab.client.post("/webhooks", json=body, headers=admin)
    assert made.status_code == 201
    hook = made.json()
    assert set(hook) >= {"id", "url", "events", "canvas_id", "secret", "status", "created_at"}
    assert (hook["status"], hook["canvas_id"], hook["events"]) == (
        "active", None, ["artifact_written"])
    listed = lab.client.get("/webhooks", headers=admin).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]

    foreign = lab.headers(other, role="owner")
    assert lab.client.get("/webhooks", headers=foreign).json()["items"] == []
    assert_error(lab.client.delete(f"/webhooks/{hook['id']}", headers=foreign), 404,
                 "webhook.not_found")
    assert_error(lab.client.get(f"/webhooks/{hook['id']}/deliveries", headers=foreign), 404)
    assert_error(lab.client.delete(f"/webhooks/{hook['id']}",
                                   headers=lab.headers(tenant, env="prod", role="admin")), 404)
    assert lab.client.get(f"/webhooks/{hook['id']}/deliveries", headers=admin).json() == {
        "items": []}
    assert lab.client.delete(f"/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert_error(lab.client.delete(f"/webhooks/{hook['id']}", headers=admin), 404)
    assert lab.client.get("/webhooks", headers=admin).json()["items"] == []


def test_idempotent_create_returns_the_same_subscription(lab: Stack) -> None:
    headers = {**lab.headers(new_tenant(), role="admin"), "Idempotency-Key": "k1"}
    body = {"url": "http://127.0.0.1:9/hook", "events": ["artifact_written"]}
    first = lab.client.post("/webhooks", json=body, headers=headers)
    again = lab.client.post("/webhooks", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    listed = lab.client.get("/webhooks", headers=headers).json()["items"]
    assert len(listed) == 1


def test_purged_events_are_not_delivered(lab: Stack) -> None:
    """Tenant purge deletes the event rows: a pending delivery is dropped, not sent."""
    from sqlalchemy import delete

    from engines.lineage.nexus.backends.sql import events

    tenant = new_tenant()
    with receiver() as hook:
        sub = subscribe(lab, hook.url, tenant)
        created(create_audit(lab, new_canvas(), tenant=tenant))
        worker = DeliveryWorker(lab.runtime.engine, lab.settings)
        for subscription in [s for s in _behind(lab) if s["id"] == sub["id"]]:
            with lab.runtime.engine.begin() as conn:
                worker._fan_out(conn, subscription)
        with lab.runtime.engine.begin() as conn:
            conn.execute(delete(events).where(events.c.tenant_id == tenant))
        deliver(lab, lambda: True, rounds=2)
    assert hook.requests == []
    assert attempts(lab, tenant, sub["id"]) == []


def _behind(stack: Stack) -> list[dict[str, Any]]:
    from engines.events.webhooks.repository import subscriptions_behind

    with stack.runtime.engine.connect() as conn:
        return subscriptions_behind(conn)



def test_stop_lets_the_delivery_in_flight_be_recorded(lab: Stack) -> None:
    """A worker told to stop (SIGTERM, shutdown) while its POST is in flight waits for
    the answer and records it, so the next worker does not send the event again."""
    tenant = new_tenant()
    with receiver(["hang"]) as hook:
        sub = subscribe(lab, hook.url, tenant)
        created(create_audit(lab, new_canvas(), tenant=tenant))
        worker = DeliveryWorker(lab.runtime.engine,
                                lab.settings.model_copy(update={"webhook_timeout_seconds": 5}))

        async def run() -> None:
            worker.start()
            while not hook.hanging.is_set():
                await asyncio.sleep(0.02)
            stopping = asyncio.get_running_loop().create_task(worker.stop())
            await asyncio.sleep(0.2)
            assert not stopping.done(), "stop() abandoned the delivery in flight"
            hook.release.set()
            await stopping

        asyncio.run(run())
    assert [(a["attempt"], a["outcome"]) for a in attempts(lab, tenant, sub["id"])] == [
        (1, "retrying")]
