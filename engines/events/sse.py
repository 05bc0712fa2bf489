"""SSE routes: a canvas's artifact events, or every canvas of the caller's (tenant, env).

Auth and routing headers are those of every read (viewers may subscribe).
Each message is `id: <seq>`, `event: <type>`, `data: <event JSON>`. The stream
opens with `id: <seq it starts after>` and a `: connected` comment; a
comment line is sent when nothing happened for EVENTS_HEARTBEAT_SECONDS so
proxies keep the connection open and clients notice a dead one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from engines.canvas_artifacts.router import CanvasId
from engines.common.errors import AUTHENTICATED_ERRORS, Unprocessable, error_responses
from engines.common.openapi import AuthenticatedRoute
from engines.events.feed import EVENT_NAMES, FeedEvent
from engines.events.hub import EventHub
from engines.identity.auth import Caller, reader

router = APIRouter(tags=["events"], route_class=AuthenticatedRoute)

_MESSAGE = {"type": "object", "description": "one SSE message (comments are heartbeats)",
            "properties": {"id": {"type": "string", "description": "the event's seq"},
                           "event": {"type": "string", "enum": list(EVENT_NAMES)},
                           "data": {"type": "string", "contentMediaType": "application/json",
                                    "description": "the event JSON"}}}
_RESPONSES = {**error_responses(*AUTHENTICATED_ERRORS),
              200: {"description": "an endless `text/event-stream` of artifact events",
                    "content": {"text/event-stream": {"schema": _MESSAGE}}}}
Reader = Annotated[Caller, Depends(reader)]
After = Annotated[int | None, Query(ge=0, le=2**63 - 1,
                                    description="resume after this seq (as Last-Event-ID)")]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


def get_hub(request: Request) -> EventHub:
    return request.app.state.event_hub


def resume_point(after: int | None, last_event_id: str | None) -> int | None:
    """`Last-Event-ID` (what browsers send on reconnect) wins over `?after=`."""
    if last_event_id is None or not last_event_id.strip():
        return after
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 19:
        raise Unprocessable("Last-Event-ID must be an event seq (a non-negative integer)",
                            code="events.bad_last_event_id")
    return int(value)


def sse_message(event: FeedEvent | None) -> bytes:
    if event is None:
        return b": heartbeat\n\n"
    return (f"id: {event.seq}\nevent: {event.type}\ndata: ".encode() + event.json() + b"\n\n")


async def _stream(hub: EventHub, caller: Caller, canvas_id: str | None,
                  after: int | None) -> AsyncIterator[bytes]:
    async with hub.subscription((caller.ctx.tenant_id, caller.ctx.env), canvas_id) as sub:
        # `id:` without data dispatches no event but sets the client's Last-Event-ID: a
        # client dropped before its first event resumes from here and misses nothing
        start = sub.baseline if after is None else after
        yield f"id: {start}\n: connected\n\n".encode()
        async for event in hub.follow(sub, after):
            yield sse_message(event)


def _response(request: Request, caller: Caller, canvas_id: str | None, after: int | None,
              last_event_id: str | None) -> StreamingResponse:
    start = resume_point(after, last_event_id)
    return StreamingResponse(
        _stream(get_hub(request), caller, canvas_id, start), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/canvas/{canvas_id}/artifacts/events", responses=_RESPONSES,
            response_class=StreamingResponse)
async def canvas_events(request: Request, canvas_id: CanvasId, caller: Reader,
                        after: After = None,
                        last_event_id: LastEventId = None) -> StreamingResponse:
    """This canvas's `artifact_written` / `artifact_deleted` events, live; resumable."""
    return _response(request, caller, canvas_id, after, last_event_id)


@router.get("/artifacts/events", responses=_RESPONSES, response_class=StreamingResponse)
async def tenant_events(request: Request, caller: Reader, after: After = None,
                        last_event_id: LastEventId = None) -> StreamingResponse:
    """Every canvas's artifact events in the caller's (tenant, env), live; resumable."""
    return _response(request, caller, None, after, last_event_id)
