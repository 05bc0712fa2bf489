"""HTTP routes for canvas artifacts: thin, the service does the work."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from engines.auth.tokens import Reader, Writer
from engines.canvas_artifacts import content_dispatch, creates, reads
from engines.canvas_artifacts.models import (
    ArtifactKindName,
    ArtifactList,
    ArtifactRecord,
    AuditReport,
    Lineage,
    RenderRef,
    ReplayDocument,
)
from engines.canvas_artifacts.variants.query import VariantQuery, variant_query
from engines.http.errors import AUTHENTICATED_ERRORS, BODY_ERRORS, error_responses
from engines.http.jsonutil import OrjsonResponse
from engines.http.lean import LeanRoute, lean
from engines.http.openapi import (
    BINARY,
    FileUpload,
    body_schema,
    request_body,
)
from engines.http.params import (
    ArtifactId,
    CanvasId,
    Limit,
    PageCursor,
    Rev,
)
from engines.http.sniff import MAGIC
from engines.runtime import Rt

_PREFIX = "/canvas/{canvas_id}/artifacts"
hot = APIRouter(prefix=_PREFIX, tags=["canvas artifacts"], route_class=LeanRoute)
"""The creates and the content GET, which the app includes before every other router.

FastAPI tries the included routers in order and each one's routes in order, so
a request for a route in the sixth router pays for five routers' worth of
failed matches first (a fifth of the create path's framework time). These
paths end in a literal segment that no other route has at that depth, so
trying them first changes no answer (`tests/test_routes.py` checks that every
route's own path still reaches that route).
"""
router = APIRouter(prefix=_PREFIX, tags=["canvas artifacts"], route_class=LeanRoute)


_JSON = "application/json"
_OCTETS = "application/octet-stream"

_PREVIEW_BODY = request_body({
    _OCTETS: {"schema": BINARY},
    "multipart/form-data": {"schema": body_schema(FileUpload)},
    _JSON: {"schema": body_schema(RenderRef)},
}, required=True)
_RESPONSES = error_responses(*AUTHENTICATED_ERRORS, 404)
_CREATE_RESPONSES = {**_RESPONSES, **error_responses(*BODY_ERRORS)}
_BYTES = {"schema": BINARY}
# application/octet-stream first: generators read the first type they know, and a
# client must get bytes back whatever the stored type (a PNG is not text, nor JSON)
_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES, **error_responses(416),
    200: {"description": "the payload: preview bytes, or the replay/audit JSON; "
                         "Content-Type names the stored type",
          "content": {_OCTETS: _BYTES, **{mime: _BYTES for mime in MAGIC}, _JSON: {"schema": {}}}},
    # a slice of a JSON document is not JSON: the type is declared, no body schema
    206: {"description": "one byte range of the payload",
          "content": {_OCTETS: _BYTES, **{mime: _BYTES for mime in MAGIC}, _JSON: {}}},
    304: {"description": "not modified (If-None-Match)"},
    307: {"description": "render-ref, or a presigned URL in redirect serve mode"},
}


# response_class=Response: FastAPI would otherwise list application/json first
@hot.get("/{artifact_id}/content", response_class=Response, responses=_CONTENT_RESPONSES,
            openapi_extra={
    # Read from the request by serve_blob, so FastAPI cannot see them: listed
    # here so that clients (and the schema fuzz) know they are honoured.
    "parameters": [{"name": name, "in": "header", "required": False,
                    "schema": {"type": "string"}}
                   for name in ("Range", "If-Range", "If-None-Match")]})
@lean
async def get_artifact_content(request: Request, canvas_id: CanvasId, artifact_id: ArtifactId,
                               rt: Rt, caller: Reader,
                               from_ms: Annotated[int | None, Query(ge=0)] = None,
                               to_ms: Annotated[int | None, Query(ge=0)] = None,
                               disposition: Literal["attachment", "inline"] = "attachment",
                               variant: Annotated[VariantQuery | None,
                                                  Depends(variant_query)] = None,
                               ) -> Response:
    """Bytes with ETag/Range/If-Range/If-None-Match; replay windows with from_ms/to_ms;
    image variants of raster previews with w/h (IMAGE_SIZES), format, q."""
    record = await reads.find_artifact(rt, caller.ctx, canvas_id, artifact_id)
    return await content_dispatch.content(rt, request, record, from_ms=from_ms, to_ms=to_ms,
                                          inline=disposition == "inline", variant=variant)


@hot.post("/preview", status_code=201, response_model=ArtifactRecord,
             openapi_extra=_PREVIEW_BODY, responses=_CREATE_RESPONSES)
@lean
async def create_preview(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                         caller: Writer) -> Response:
    """Raw image bytes, a multipart `file`, or a JSON render-ref `{uri, mime_type}`.

    Raw bytes may be sent as application/octet-stream or under their own type
    (image/png, image/jpeg, image/webp, image/svg+xml, text/html); the stored
    type is always read from the bytes, and a declared type must match them.
    """
    return await creates.create_preview(rt, caller, request, canvas_id, rev)


@hot.post("/replay", status_code=201, response_model=ArtifactRecord,
             openapi_extra=request_body({_JSON: {"schema": body_schema(ReplayDocument)}},
                                        required=True),
             responses=_CREATE_RESPONSES)
async def create_replay(request: Request, canvas_id: CanvasId, rt: Rt,
                        caller: Writer) -> Response:
    return await creates.create_replay(rt, caller, request, canvas_id)


@hot.post("/audit", status_code=201, response_model=ArtifactRecord,
             openapi_extra=request_body({_JSON: {"schema": body_schema(AuditReport)}},
                                        required=False),
             responses=_CREATE_RESPONSES)
async def create_audit(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                       caller: Writer) -> Response:
    """An empty body creates the pending placeholder report."""
    return await creates.create_audit(rt, caller, request, canvas_id, rev)


@router.get("", response_model=ArtifactList, responses=_RESPONSES)
def list_artifacts(canvas_id: CanvasId, rt: Rt, caller: Reader,
                   kind: ArtifactKindName | None = None,
                   rev: Annotated[int | None, Query(ge=0, le=2**53)] = None,
                   limit: Limit = 50, cursor: PageCursor = None) -> Response:
    page = reads.list_artifacts(rt, caller.ctx, canvas_id, kind=kind, rev=rev, limit=limit,
                                cursor=cursor)
    return OrjsonResponse(page.model_dump(mode="json"))


@router.get("/latest", response_model=ArtifactRecord, responses=_RESPONSES)
def get_latest_artifact(canvas_id: CanvasId, kind: ArtifactKindName, rt: Rt,
                        caller: Reader) -> Response:
    record = reads.latest_artifact(rt, caller.ctx, canvas_id, kind)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.get("/{artifact_id}", response_model=ArtifactRecord, responses=_RESPONSES)
@lean
async def get_artifact(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                       caller: Reader) -> Response:
    record = await reads.find_artifact(rt, caller.ctx, canvas_id, artifact_id)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.get("/{artifact_id}/lineage", response_model=Lineage, responses=_RESPONSES)
def get_artifact_lineage(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                         caller: Reader) -> Response:
    lineage = reads.lineage(rt, caller.ctx, canvas_id, artifact_id)
    return OrjsonResponse(lineage.model_dump(mode="json"))
