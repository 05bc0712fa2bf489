"""Routes for signed content URLs: issue one (authenticated), use one (no headers at all)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.routing import attribute
from engines.canvas_artifacts import content_dispatch, reads, signed
from engines.canvas_artifacts.router import (
    _CONTENT_RESPONSES,
    _CREATE_RESPONSES,
    ArtifactId,
    CanvasId,
    Reader,
    Rt,
)
from engines.http.errors import error_responses
from engines.http.jsonutil import OrjsonResponse
from engines.http.openapi import AuthenticatedRoute, body_schema, request_body

authenticated = APIRouter(prefix="/canvas/{canvas_id}/artifacts", tags=["signed urls"],
                          route_class=AuthenticatedRoute)
public = APIRouter(tags=["signed urls"])

_SIGNED_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{status: doc for status, doc in _CONTENT_RESPONSES.items() if int(status) < 400},
    **error_responses(403, 404, 416, 422, 503),
}


@authenticated.post("/{artifact_id}/signed-url", response_model=signed.SignedUrl,
                    responses=_CREATE_RESPONSES, openapi_extra=request_body(
                        {"application/json": {"schema": body_schema(signed.SignedUrlRequest)}},
                        required=False))
async def create_signed_url(request: Request, canvas_id: CanvasId, artifact_id: ArtifactId,
                            rt: Rt, caller: Reader) -> Response:
    """A URL that GETs this artifact's content (or one image variant) with no headers,
    until `expires_at`. Any reader may ask; `ttl_seconds` is 1..86400 (default 300).
    Nothing is written, so a retry simply gets a fresh URL. A `Host` that is neither
    PUBLIC_BASE_URL's nor in ALLOWED_HOSTS is 400 `signed_url.host_not_allowed`."""
    base_url = signed.origin(rt.settings, request)
    record = await run_in_threadpool(reads.get_artifact, rt, caller.ctx, canvas_id, artifact_id)
    body = await signed.read_request(request)
    return OrjsonResponse(signed.issue(rt.settings, base_url, record, body).model_dump(
        mode="json"))


@public.get(signed.PATH, responses=_SIGNED_RESPONSES, openapi_extra={
    "parameters": [{"name": name, "in": "query", "required": name in ("exp", "sig"),
                    "schema": {"type": "string"}}
                   for name in (*signed.VARIANT_PARAMS, "exp", "sig")]})
async def get_signed_content(request: Request, tenant_id: str, env: str, canvas_id: str,
                             artifact_id: str, rt: Rt) -> Response:
    """The content a signed URL names: same ETag, Range, nosniff and CSP rules as
    `/content`. Altered or expired: 403; artifact gone: 404."""
    variant = signed.verify(rt.settings, tenant_id, env, canvas_id, artifact_id,
                            dict(request.query_params))
    attribute(request.scope, tenant_id, env)  # the signature proves the URL's tenant
    record = await run_in_threadpool(signed.load, rt, tenant_id, env, canvas_id, artifact_id)
    return await content_dispatch.content(rt, request, record, from_ms=None, to_ms=None,
                                          inline=False, variant=variant)
