"""Webhook subscriptions for admins: create (with its secret), list, delete, attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from engines.auth.routing import RequestContext
from engines.auth.tokens import Caller
from engines.common.ids import new_id
from engines.db.engine import retry_on_disconnect
from engines.db.writer import write_transaction
from engines.events.feed import last_seq
from engines.events.webhooks import repository as repo
from engines.events.webhooks.destinations import DestinationRefused, resolve
from engines.events.webhooks.models import (
    DeliveryAttempt,
    DeliveryAttemptList,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
)
from engines.events.webhooks.signing import new_secret
from engines.http.errors import NotFound, Unprocessable
from engines.runtime import Runtime


def _not_found() -> NotFound:
    return NotFound("webhook not found", code="webhook.not_found")


async def check_destination(rt: Runtime, url: str) -> None:
    try:
        await run_in_threadpool(resolve, url, rt.settings)
    except DestinationRefused as exc:
        raise Unprocessable(f"url: {exc}", code="webhook.destination_refused") from exc


def new_subscription(caller: Caller, body: WebhookCreate) -> WebhookCreated:
    return WebhookCreated(
        id=new_id("whk"), url=body.url, events=body.events, canvas_id=body.canvas_id,
        status="active", disabled_reason=None, consecutive_failures=0,
        created_by=caller.auth.actor_id, created_at=datetime.now(UTC), secret=new_secret())


def subscription_writer(ctx: RequestContext, created: WebhookCreated) -> Any:
    """Insert the subscription; it starts at the feed's current end (future events only)."""

    def write(conn: Connection) -> None:
        repo.insert_subscription(conn, {
            **created.model_dump(), "tenant_id": ctx.tenant_id, "env": ctx.env,
            "cursor_seq": last_seq(conn, (ctx.tenant_id, ctx.env))})

    return write


@retry_on_disconnect
def list_webhooks(rt: Runtime, ctx: RequestContext) -> WebhookList:
    with rt.engine.connect() as conn:
        rows = repo.list_subscriptions(conn, ctx.tenant_id, ctx.env)
    return WebhookList(items=[Webhook.model_validate(r) for r in rows])


@retry_on_disconnect
def delete_webhook(rt: Runtime, ctx: RequestContext, subscription_id: str) -> None:
    with write_transaction(rt.engine) as conn:
        if not repo.delete_subscription(conn, ctx.tenant_id, ctx.env, subscription_id):
            raise _not_found()


@retry_on_disconnect
def list_attempts(rt: Runtime, ctx: RequestContext, subscription_id: str,
                  limit: int) -> DeliveryAttemptList:
    with rt.engine.connect() as conn:
        if repo.get_subscription(conn, ctx.tenant_id, ctx.env, subscription_id) is None:
            raise _not_found()
        rows = repo.list_attempts(conn, subscription_id, limit)
    return DeliveryAttemptList(items=[DeliveryAttempt.model_validate(r) for r in rows])
