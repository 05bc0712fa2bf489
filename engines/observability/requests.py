"""One observation per HTTP request: the metrics it feeds and its log line.

Pure ASGI, outermost of our middleware: it counts body bytes both ways,
takes the status from the response start, and after the app is done reads
what routing and `TraceHeadersMiddleware` left in the scope (route template,
request and correlation ids).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.auth.routing import ATTRIBUTED
from engines.http.params import ENVS, TENANT_RE
from engines.observability import metrics, tracing
from engines.observability.logging import REQUEST_LOGGER

log = logging.getLogger(REQUEST_LOGGER)


def route_template(scope: Scope) -> str | None:
    """`/canvas/{canvas_id}/artifacts/{artifact_id}`, never the raw path (ids are unbounded)."""
    route = scope.get("route")
    return getattr(route, "path", None)


def _routing_keys(scope: Scope) -> tuple[str | None, str | None]:
    """Tenant and env as the client sent them, when well-formed (never free text): for the
    log line only, which shows what a refused request claimed."""
    headers = dict(scope.get("headers") or [])
    tenant = headers.get(b"x-tenant-id", b"").decode("latin-1")
    env = ENVS.get(headers.get(b"x-env", b"").decode("latin-1").lower())
    return (tenant if TENANT_RE.match(tenant) and len(tenant) <= 64 else None), env


class RequestObserver:
    """Wraps the app; HTTP requests are observed, lifespan and websockets pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self._observed if scope["type"] == "http" else self.app
        await call(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        seen: dict[str, Any] = {"in": 0, "out": 0, "status": 500, "trace_id": None}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                # while the request span is surely open: it may end with the last body chunk
                state = scope.get("state") or {}
                seen["trace_id"] = tracing.annotate_current_span(state.get("request_id"),
                                                                 state.get("correlation_id"))
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self._record(scope, seen, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, seen: dict[str, Any], seconds: float) -> None:
        route = route_template(scope)
        state: dict[str, Any] = scope.get("state") or {}
        proven = state.get(ATTRIBUTED)
        metrics.observe_request(method=scope["method"], route=route, status=seen["status"],
                                seconds=seconds, bytes_in=seen["in"],
                                tenant=proven[0] if proven else None,
                                env=proven[1] if proven else None)
        tenant, env = _routing_keys(scope)
        if not log.isEnabledFor(logging.INFO):
            return
        fields = {"request_id": state.get("request_id"),
                  "correlation_id": state.get("correlation_id"),
                  "tenant": tenant, "env": env, "method": scope["method"],
                  "route": route or metrics.UNMATCHED_ROUTE, "status": seen["status"],
                  "duration_ms": round(seconds * 1000, 2), "bytes_in": seen["in"],
                  "bytes_out": seen["out"]}
        if seen["trace_id"]:
            fields["trace_id"] = seen["trace_id"]
        log.info("%s %s %s", scope["method"], fields["route"], seen["status"],
                 extra={"fields": fields, "in_message": ("method", "route", "status")})
