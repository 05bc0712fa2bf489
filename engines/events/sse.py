"""SSE routes: a canvas's artifact events, or every canvas of the caller's (tenant, env).

Auth and routing headers are those of every read (viewers may subscribe), or
an SSE ticket in `?ticket=` for browsers' EventSource (engines/events/tickets.py).
A stream takes a slot of its tenant's and of its process's (stream_slots):
beyond either limit the answer is 429, before the stream starts.
Each message is `id: <seq>`, `event: <type>`, `data: <event JSON>`. The stream
opens with `id: <seq it starts after>` and a `: connected` comment; a
comment line is sent when nothing happened for EVENTS_HEARTBEAT_SECONDS so
proxies keep the connection open and clients notice a dead one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from engines.auth.tokens import Caller
from engines.events.feed import EVENT_NAMES, FeedEvent
from engines.events.hub import EventHub
from engines.events.lifetime import bounded
from engines.events.stream_slots import StreamSlots
from engines.events.tickets import TICKET_PARAMETER, stream_reader
from engines.http.errors import AUTHENTICATED_ERRORS, Unprocessable, error_responses
from engines.http.fair_share import HeldStreamingResponse
from engines.http.head import head_of_stream, is_head
from engines.http.openapi import AuthenticatedRoute
from engines.http.params import CanvasId

router = APIRouter(tags=["events"], route_class=AuthenticatedRoute)

_MESSAGE = {"type": "object", "description": "one SSE message (comments are heartbeats)",
            "properties": {"id": {"type": "string", "description": "the event's seq"},
                           "event": {"type": "string", "enum": list(EVENT_NAMES)},
                           "data": {"type": "string", "contentMediaType": "application/json",
                                    "description": "the event JSON"}}}
_RESPONSES = {**error_responses(*AUTHENTICATED_ERRORS, 429),
              200: {"description": "an endless `text/event-stream` of artifact events",
                    "content": {"text/event-stream": {"schema": _MESSAGE}}}}
MAX_SEQ = 2**63 - 1
"""The largest seq a feed can hold (a signed 64-bit column): the bound of both resume points."""
Reader = Annotated[Caller, Depends(stream_reader)]
After = Annotated[int | None, Query(ge=0, le=MAX_SEQ,
                                    description="resume after this seq (as Last-Event-ID)")]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


_DIGITS = re.compile(r"[0-9]{1,20}")
_EVENT_STREAM = "text/event-stream"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def get_hub(request: Request) -> EventHub:
    return request.app.state.event_hub


def resume_point(after: int | None, last_event_id: str | None) -> int | None:
    """`Last-Event-ID` (what browsers send on reconnect) wins over `?after=`."""
    if last_event_id is None or not last_event_id.strip():
        return after
    value = last_event_id.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses
    if not _DIGITS.fullmatch(value) or int(value) > MAX_SEQ:
        raise Unprocessable(f"Last-Event-ID must be an event seq (an integer from 0 to "
                            f"{MAX_SEQ})", code="events.bad_last_event_id")
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
        async for event in bounded(hub.follow(sub, after),
                                   hub.settings.events_stream_max_seconds):
            yield sse_message(event)


async def _response(request: Request, caller: Caller, canvas_id: str | None,
                    after: int | None, last_event_id: str | None) -> Response:
    """Validated and admitted (docs/fair-share.md) before the first byte is sent; HEAD
    answers the headers and never holds a stream."""
    start = resume_point(after, last_event_id)
    if is_head(request):
        return head_of_stream(_EVENT_STREAM, _HEADERS)
    slots: StreamSlots = request.app.state.stream_slots
    release = await slots.take(caller.ctx.tenant_id)
    return HeldStreamingResponse(_stream(get_hub(request), caller, canvas_id, start),
                                 release=release, media_type=_EVENT_STREAM, headers=_HEADERS)


@router.get("/canvas/{canvas_id}/artifacts/events", responses=_RESPONSES,
            response_class=StreamingResponse, openapi_extra=TICKET_PARAMETER)
async def canvas_events(request: Request, canvas_id: CanvasId, caller: Reader,
                        after: After = None,
                        last_event_id: LastEventId = None) -> Response:
    """This canvas's `artifact_written` / `artifact_deleted` events, live; resumable."""
    return await _response(request, caller, canvas_id, after, last_event_id)


@router.get("/artifacts/events", responses=_RESPONSES, response_class=StreamingResponse,
            openapi_extra=TICKET_PARAMETER)
async def tenant_events(request: Request, caller: Reader, after: After = None,
                        last_event_id: LastEventId = None) -> Response:
    """Every canvas's artifact events in the caller's (tenant, env), live; resumable."""
    return await _response(request, caller, None, after, last_event_id)
