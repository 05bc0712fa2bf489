"""Routes for signed content URLs: issue one (authenticated), use one (no headers at all)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.canvas_artifacts import service, signed
from engines.canvas_artifacts.router import _CONTENT_RESPONSES, ArtifactId, CanvasId, Reader, Rt
from engines.common.errors import error_responses
from engines.common.jsonutil import OrjsonResponse

router = APIRouter(tags=["signed urls"])


@router.post("/canvas/{canvas_id}/artifacts/{artifact_id}/signed-url",
             response_model=signed.SignedUrl,
             responses=error_responses(400, 401, 403, 404, 422, 503))
async def create_signed_url(request: Request, canvas_id: CanvasId, artifact_id: ArtifactId,
                            rt: Rt, caller: Reader,
                            body: Annotated[signed.SignedUrlRequest | None, Body()] = None,
                            ) -> Response:
    """A URL that GETs this artifact's content (or one image variant) with no headers,
    until `expires_at`. Any reader may ask; `ttl_seconds` is 1..86400 (default 300)."""
    record = await run_in_threadpool(service.get_artifact, rt, caller.ctx, canvas_id, artifact_id)
    issued = signed.issue(rt.settings, request, record, body or signed.SignedUrlRequest())
    return OrjsonResponse(issued.model_dump(mode="json"))


@router.get(signed.PATH, responses=_CONTENT_RESPONSES, openapi_extra={
    "parameters": [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                   for name in (*signed.VARIANT_PARAMS, "exp", "sig")]})
async def signed_content(request: Request, tenant_id: str, env: str, canvas_id: str,
                         artifact_id: str, rt: Rt) -> Response:
    """The content a signed URL names: same ETag, Range, nosniff and CSP rules as
    `/content`. Altered or expired: 403; artifact gone: 404."""
    variant = signed.verify(rt.settings, tenant_id, env, canvas_id, artifact_id,
                            dict(request.query_params))
    record = await run_in_threadpool(signed.load, rt, tenant_id, env, canvas_id, artifact_id)
    return await service.content(rt, request, record, from_ms=None, to_ms=None, inline=False,
                                 variant=variant)
