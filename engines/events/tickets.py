"""SSE tickets: how a browser's `EventSource`, which cannot send headers, opens a stream.

A reader asks `POST /events/tickets` (with its token and routing headers) for
a ticket naming one stream: one canvas's events, or the whole tenant/env
feed. The ticket then stands in for the headers on that stream's URL:

    GET /canvas/{canvas_id}/artifacts/events?ticket=...
    GET /artifacts/events?ticket=...

A ticket is `<payload>.<mac>`: the payload (base64url JSON) holds the tenant,
env, canvas (empty for the tenant feed), actor, role, project and expiry; the
mac is the signed-URL HMAC (`signed.mac`, URL_SIGNING_KEY, never the JWT key)
over those fields under its own label, so a signed URL's signature is never a
ticket. It lives at most MAX_TTL_SECONDS and is valid for its one stream
only: expired, altered, or presented on another stream, tenant or env, it is
401. It is checked when a stream opens (EventSource reconnects reuse it
while it is valid), so a token never appears in a URL or a log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from engines.auth.mac import mac
from engines.auth.routing import RequestContext
from engines.auth.tokens import AuthContext, Caller, reader
from engines.config import Settings
from engines.http.body import read_small_json
from engines.http.errors import AUTHENTICATED_ERRORS, Unauthorized, error_responses
from engines.http.jsonutil import OrjsonResponse
from engines.http.openapi import AuthenticatedRoute, body_schema, request_body
from engines.http.params import ENVS, SAFE_ID_PATTERN

MAX_TTL_SECONDS = 300
DEFAULT_TTL_SECONDS = 60
LABEL = "engines-sse-ticket-v1"
MAX_TICKET_LENGTH = 2048
REQUEST_BYTES = 4096
_FIELDS = ("tenant_id", "env", "canvas_id", "actor_id", "role", "project_id", "exp")

router = APIRouter(tags=["events"], route_class=AuthenticatedRoute)


class TicketRequest(BaseModel):
    """Which stream the ticket opens: one canvas, or (no canvas_id) the tenant/env feed."""

    model_config = ConfigDict(extra="forbid")
    canvas_id: str | None = Field(default=None, pattern=SAFE_ID_PATTERN, max_length=128)
    ttl_seconds: int = Field(default=DEFAULT_TTL_SECONDS, ge=1, le=MAX_TTL_SECONDS)


class SseTicket(BaseModel):
    ticket: str
    expires_at: datetime
    url: str = Field(description="the stream's path with the ticket, for `new EventSource(...)`")
    canvas_id: str | None = Field(description="the canvas it opens; null: the tenant/env feed")


def stream_path(canvas_id: str | None) -> str:
    if canvas_id is None:
        return "/artifacts/events"
    return f"/canvas/{quote(canvas_id, safe='')}/artifacts/events"


def _encode(payload: list[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def issue(settings: Settings, caller: Caller, body: TicketRequest, *,
          now: float | None = None) -> SseTicket:
    """A ticket for the caller's stream, living `ttl_seconds` from `now` (epoch seconds;
    None: the present, a test's seam: an expired ticket without waiting)."""
    ctx = caller.ctx
    expires = int(time.time() if now is None else now) + body.ttl_seconds
    payload = [ctx.tenant_id, ctx.env, body.canvas_id or "", caller.auth.actor_id,
               caller.role, ctx.project_id, str(expires)]
    ticket = f"{_encode(payload)}.{mac(settings.url_key(), [LABEL, *payload])}"
    return SseTicket(ticket=ticket, expires_at=datetime.fromtimestamp(expires, UTC),
                     url=f"{stream_path(body.canvas_id)}?ticket={ticket}",
                     canvas_id=body.canvas_id)


def _invalid(message: str = "the SSE ticket is invalid") -> Unauthorized:
    return Unauthorized(message, code="auth.ticket_invalid")


def _decode(settings: Settings, ticket: str) -> dict[str, str]:
    """The signed fields; 401 for anything not minted here, checked before it is read."""
    encoded, _, signature = ticket.partition(".")
    if len(ticket) > MAX_TICKET_LENGTH or not signature:
        raise _invalid()
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise _invalid() from exc
    if not isinstance(payload, list) or len(payload) != len(_FIELDS) or not all(
            isinstance(value, str) for value in payload):
        raise _invalid()
    expected = mac(settings.url_key(), [LABEL, *payload])
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise _invalid()
    fields = dict(zip(_FIELDS, payload, strict=True))
    if not fields["exp"].isdigit() or int(fields["exp"]) <= time.time():
        raise Unauthorized("the SSE ticket has expired; ask POST /events/tickets for a new "
                           "one", code="auth.ticket_expired")
    return fields


def caller_from_ticket(settings: Settings, request: Request, ticket: str) -> Caller:
    """The reader a ticket stands for, on the stream it names only."""
    fields = _decode(settings, ticket)
    canvas_id = request.path_params.get("canvas_id") or ""
    if fields["canvas_id"] != canvas_id:
        raise _invalid("the SSE ticket is for another stream")
    headers = request.headers
    tenant, env = headers.get("x-tenant-id"), headers.get("x-env")
    if (tenant is not None and tenant != fields["tenant_id"]) or (
            env is not None and ENVS.get(env.lower()) != fields["env"]):
        raise _invalid("the SSE ticket is for another tenant or env")
    auth = AuthContext(actor_id=fields["actor_id"], tenant_ids=frozenset({fields["tenant_id"]}),
                       role_map={fields["tenant_id"]: fields["role"]})
    ctx = RequestContext(tenant_id=fields["tenant_id"], env=fields["env"],
                         project_id=fields["project_id"], request_id=request.state.request_id,
                         correlation_id=request.state.correlation_id)
    return Caller(auth=auth, ctx=ctx, role=fields["role"])


async def stream_reader(request: Request) -> Caller:
    """Dependency of the SSE routes: `?ticket=` in place of the headers when given,
    else the checks of every read."""
    tickets = request.query_params.getlist("ticket")
    if not tickets:
        return await reader(request)
    if len(tickets) > 1:
        raise _invalid("give one ticket")
    return caller_from_ticket(request.app.state.runtime.settings, request, tickets[0])


TICKET_PARAMETER: dict[str, Any] = {"parameters": [{
    "name": "ticket", "in": "query", "required": False, "schema": {
        "type": "string", "maxLength": MAX_TICKET_LENGTH},
    "description": "an SSE ticket (POST /events/tickets) in place of the Authorization and "
                   "routing headers, for EventSource"}]}


@router.post("/events/tickets", response_model=SseTicket,
             responses=error_responses(*AUTHENTICATED_ERRORS, 413, 415),
             openapi_extra=request_body({"application/json": {
                 "schema": body_schema(TicketRequest)}}, required=False))
async def create_sse_ticket(request: Request,
                            caller: Annotated[Caller, Depends(reader)]) -> Response:
    """A short-lived ticket (1-300 s, default 60) that opens one SSE stream without
    headers: the canvas named in the body, or the tenant/env feed. Any reader may ask."""
    body = await read_small_json(request, TicketRequest, REQUEST_BYTES)
    settings = request.app.state.runtime.settings
    return OrjsonResponse(issue(settings, caller, body).model_dump(mode="json"))
