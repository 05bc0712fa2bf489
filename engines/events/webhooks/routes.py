"""Webhook admin routes: tenant admins and owners only (members and viewers get 403)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from engines.auth.tokens import Admin
from engines.db import idempotency
from engines.db.metadata import row_exists
from engines.events.webhooks import service
from engines.events.webhooks.models import (
    DeliveryAttemptList,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
)
from engines.events.webhooks.tables import subscriptions
from engines.http.body import read_limited, require_json
from engines.http.errors import (
    AUTHENTICATED_ERRORS,
    Unprocessable,
    error_responses,
    first_error_message,
)
from engines.http.jsonutil import parse_json
from engines.http.openapi import AuthenticatedRoute, body_schema, request_body
from engines.http.params import SafeId
from engines.runtime import Rt

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=AuthenticatedRoute)

MAX_BODY = 16 * 1024
_RESPONSES = error_responses(*AUTHENTICATED_ERRORS)


WebhookId = SafeId


@router.post("", status_code=201, response_model=WebhookCreated,
             responses={**_RESPONSES, **error_responses(409, 413, 415)},
             openapi_extra=request_body({"application/json": {"schema": body_schema(
                 WebhookCreate)}}, required=True))
async def create_webhook(request: Request, rt: Rt, caller: Admin) -> Response:
    """Subscribe a URL; the answer carries the signing secret, shown only here."""
    require_json(request)
    raw = await read_limited(request, MAX_BODY)
    try:
        body = WebhookCreate.model_validate(parse_json(raw, max_depth=8))
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="webhook.invalid") from exc
    await service.check_destination(rt, body.url)
    created = service.new_subscription(caller, body)
    answer = created.model_dump_json().encode()
    replayed = await idempotency.write_once(
        rt.engine, service.subscription_writer(caller.ctx, created),
        lambda conn: row_exists(conn, subscriptions, created.id),
        claim=idempotency.claim_from(request, caller.ctx, caller.auth.actor_id),
        body_sha256=hashlib.sha256(raw).hexdigest(), status=201, body=answer)
    if replayed is not None:
        return replayed.response()
    return Response(answer, status_code=201, media_type="application/json")


@router.get("", response_model=WebhookList, responses=_RESPONSES)
def list_webhooks(rt: Rt, caller: Admin) -> WebhookList:
    return service.list_webhooks(rt, caller.ctx)


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(
    *AUTHENTICATED_ERRORS, 404))
def delete_webhook(webhook_id: WebhookId, rt: Rt, caller: Admin) -> Response:
    service.delete_webhook(rt, caller.ctx, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryAttemptList,
            responses=error_responses(*AUTHENTICATED_ERRORS, 404))
def list_deliveries(webhook_id: WebhookId, rt: Rt, caller: Admin,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> DeliveryAttemptList:
    """Recent delivery attempts, newest first: status code, duration, error."""
    return service.list_attempts(rt, caller.ctx, webhook_id, limit)
