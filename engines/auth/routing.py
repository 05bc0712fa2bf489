"""Who is calling and for which tenant/env: the routing keys of every request.

`RequestContext` comes from headers only. Tenant and env are the isolation
boundary; project/workspace/surface/app are recorded for lineage.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.common.ids import random_hex
from engines.http.errors import BadRequest
from engines.http.params import ENVS, MODES, TENANT_RE, TRACE_ID_RE, is_safe_id

ATTRIBUTED = "attributed_tenant"
"""Where `attribute` keeps the proven (tenant, env) in the request scope's state."""


def attribute(scope: Scope, tenant: str, env: str) -> None:
    """Count this request for (tenant, env) in the per-tenant metrics. Called only once
    the caller proved it may act there (its token lists the tenant, or a signed URL's
    signature holds), never from the raw headers: anyone can send a made-up
    X-Tenant-Id, and each one would be a new metric series."""
    scope.setdefault("state", {})[ATTRIBUTED] = (tenant, env)


@dataclass(frozen=True, slots=True)
class RequestContext:
    tenant_id: str
    env: str
    project_id: str
    request_id: str
    correlation_id: str
    workspace_id: str | None = None
    surface_id: str | None = None
    app_id: str | None = None
    mode: str | None = None
    """X-Mode when sent (always under ROUTING_MODE=mode); recorded in lineage and events."""


def _optional_id(request: Request, header: str) -> str | None:
    value = request.headers.get(header)
    if value is None:
        return None
    if not is_safe_id(value):
        raise BadRequest(f"{header} is malformed")
    return value


def get_request_context(request: Request) -> RequestContext:
    """Build the context from headers; missing or malformed routing keys are 400."""
    headers = request.headers
    tenant = headers.get("x-tenant-id")
    if not tenant:
        raise BadRequest("X-Tenant-Id header is required")
    if not TENANT_RE.match(tenant) or len(tenant) > 64:
        raise BadRequest("X-Tenant-Id is malformed (expected t_[a-z0-9_-]+)")
    mode = _mode(headers.get("x-mode"))
    settings = request.app.state.runtime.settings
    if settings.routing_mode == "mode":
        env = _service_env(headers, mode, settings.engines_env)
    else:
        env = _header_env(headers.get("x-env"))
    project = headers.get("x-project-id")
    if not project:
        raise BadRequest("X-Project-Id header is required")
    if not is_safe_id(project):
        raise BadRequest("X-Project-Id is malformed")
    return RequestContext(
        tenant_id=tenant,
        env=env,
        project_id=project,
        request_id=request.state.request_id,
        correlation_id=request.state.correlation_id,
        workspace_id=_optional_id(request, "x-workspace-id"),
        surface_id=_optional_id(request, "x-surface-id"),
        app_id=_optional_id(request, "x-app-id"),
        mode=mode,
    )


def _mode(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw.lower() not in MODES:
        raise BadRequest("X-Mode must be one of saas, enterprise, lab")
    return raw.lower()


def _header_env(raw: str | None) -> str:
    if not raw:
        raise BadRequest("X-Env header is required")
    env = ENVS.get(raw.lower())
    if env is None:
        raise BadRequest("X-Env must be one of dev, staging, prod")
    return env


def _service_env(headers: Headers, mode: str | None, service_env: str) -> str:
    """ROUTING_MODE=mode, as the engines codebase routes: X-Mode required, X-Env refused,
    the env is the service's own (ENGINES_ENV)."""
    if "x-env" in headers:
        raise BadRequest("X-Env header is not allowed; use X-Mode (saas|enterprise|lab)")
    if mode is None:
        raise BadRequest("X-Mode header is required; must be one of: saas, enterprise, lab")
    return service_env


def _trace_id(value: bytes | None) -> str:
    if value:
        text = value.decode("latin-1")
        if TRACE_ID_RE.match(text):
            return text
    return random_hex(16)


class TraceHeadersMiddleware:
    """Pure ASGI middleware: assigns request/correlation ids and echoes them.

    Runs before routing so that even a 401 or a 404 for an unknown path
    carries a request id, in the envelope and in the response headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = _trace_id(headers.get(b"x-request-id"))
        correlation_id = _trace_id(headers.get(b"x-correlation-id")) \
            if headers.get(b"x-correlation-id") else request_id
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["correlation_id"] = correlation_id
        extra = [(b"x-request-id", request_id.encode()),
                 (b"x-correlation-id", correlation_id.encode())]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_ids)
