"""HTTP routes for canvas artifacts: thin, the service does the work."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from engines.canvas_artifacts import export, lifecycle, service
from engines.canvas_artifacts.models import (
    ArtifactKindName,
    ArtifactList,
    ArtifactRecord,
    AuditReport,
    Lineage,
    RenderRef,
    ReplayDocument,
)
from engines.canvas_artifacts.sniff import MAGIC
from engines.canvas_artifacts.variants import VariantQuery, variant_query
from engines.common.errors import AUTHENTICATED_ERRORS, BODY_ERRORS, error_responses
from engines.common.identity import SAFE_ID_PATTERN
from engines.common.jsonutil import OrjsonResponse
from engines.common.lean import LeanRoute, lean
from engines.common.openapi import (
    BINARY,
    FileUpload,
    body_schema,
    request_body,
)
from engines.common.runtime import Runtime, get_runtime
from engines.identity.auth import Caller, admin, reader, writer

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

router = APIRouter(prefix="/canvas/{canvas_id}/artifacts", tags=["canvas artifacts"],
                   route_class=LeanRoute)


# A plain path parameter, not a dependency that raises: dependencies run before request
# validation, so an unauthenticated caller must get 401 here, never a 422.
CanvasId = Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=128)]
ArtifactId = Annotated[str, Path(pattern=SAFE_ID)]
Rev = Annotated[int, Query(ge=0, le=2**53, description="canvas revision")]
Rt = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]
Admin = Annotated[Caller, Depends(admin)]

# ---- lean paths (engines/common/lean.py): plainly valid requests of the hot routes ----
_CANVAS_ID_RE = re.compile(SAFE_ID_PATTERN)
_ARTIFACT_ID_RE = re.compile(SAFE_ID)
_REV_ONLY = re.compile(rb"rev=(0|[1-9][0-9]{0,15})")
"""`?rev=N` alone, N without sign or leading zero and under 2**53 (checked below)."""


def _plain_ids(request: Request) -> dict[str, Any] | None:
    params = request.path_params
    canvas_id = params["canvas_id"]
    if len(canvas_id) > 128 or not _CANVAS_ID_RE.fullmatch(canvas_id):
        return None
    artifact_id = params.get("artifact_id")
    if artifact_id is not None and not _ARTIFACT_ID_RE.fullmatch(artifact_id):
        return None
    return dict(params)


async def _read_arguments(request: Request) -> dict[str, Any] | None:
    """Plain ids, the runtime and an authorised reader: every lean GET's arguments."""
    ids = _plain_ids(request)
    if ids is None:
        return None
    return {**ids, "rt": await get_runtime(request), "caller": await reader(request)}


async def _lean_read(request: Request) -> dict[str, Any] | None:
    """A GET by id with no query string: the defaults of every query parameter."""
    return None if request.scope["query_string"] else await _read_arguments(request)


_VARIANT_PARAM = re.compile(rb"(w|h|q)=([1-9][0-9]{0,8})|(format)=(webp|png|jpeg|auto)")
"""One variant parameter, plainly valid: a number without sign or leading zero, under
2**30, or a known format name."""


def _plain_variant(query: bytes) -> VariantQuery | None:
    """The variant a query of plainly valid variant parameters, each given once, asks
    for; None for any other query (FastAPI then answers it, 422s included)."""
    asked: dict[str, int | str] = {}
    for part in query.split(b"&"):
        match = _VARIANT_PARAM.fullmatch(part)
        if match is None:
            return None
        name = (match[1] or match[3]).decode()
        if name in asked:
            return None
        asked[name] = int(match[2]) if match[1] else match[4].decode()
    try:
        return VariantQuery.model_validate(asked)
    except ValidationError:
        return None


async def _lean_content(request: Request) -> dict[str, Any] | None:
    """A content GET with no query, or with only image-variant parameters (thumbnails:
    a board list asks for hundreds of `?w=256`)."""
    query = request.scope["query_string"]
    if not query:
        return await _read_arguments(request)
    variant = _plain_variant(query)
    arguments = await _read_arguments(request) if variant is not None else None
    return None if arguments is None else {**arguments, "variant": variant}


async def _lean_create(request: Request) -> dict[str, Any] | None:
    """A create with `?rev=N` as its whole query string."""
    rev = _REV_ONLY.fullmatch(request.scope["query_string"])
    ids = _plain_ids(request) if rev else None
    if ids is None or int(rev[1]) > 2**53:  # type: ignore[index]
        return None
    return {**ids, "rev": int(rev[1]), "rt": await get_runtime(request),  # type: ignore[index]
            "caller": await writer(request)}


_JSON = "application/json"
_OCTETS = "application/octet-stream"



def _deletion(caller: Caller) -> lifecycle.Deletion:
    return lifecycle.Deletion("deleted", caller.auth.actor_id, caller.ctx.request_id,
                              caller.ctx.correlation_id, caller.ctx.mode)


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


# First of the routes: routing tries them in order, and this is the hottest one. It shadows
# nothing (no other route matches .../{id}/content), so the order changes no answer.
# response_class=Response: FastAPI would otherwise list application/json first
@router.get("/{artifact_id}/content", response_class=Response, responses=_CONTENT_RESPONSES,
            openapi_extra={
    # Read from the request by serve_blob, so FastAPI cannot see them: listed
    # here so that clients (and the schema fuzz) know they are honoured.
    "parameters": [{"name": name, "in": "header", "required": False,
                    "schema": {"type": "string"}}
                   for name in ("Range", "If-Range", "If-None-Match")]})
@lean(_lean_content)
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
    record = await service.find_artifact(rt, caller.ctx, canvas_id, artifact_id)
    return await service.content(rt, request, record, from_ms=from_ms, to_ms=to_ms,
                                 inline=disposition == "inline", variant=variant)


@router.post("/preview", status_code=201, response_model=ArtifactRecord,
             openapi_extra=_PREVIEW_BODY, responses=_CREATE_RESPONSES)
@lean(_lean_create)
async def create_preview(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                         caller: Writer) -> Response:
    """Raw image bytes, a multipart `file`, or a JSON render-ref `{uri, mime_type}`.

    Raw bytes may be sent as application/octet-stream or under their own type
    (image/png, image/jpeg, image/webp, image/svg+xml, text/html); the stored
    type is always read from the bytes, and a declared type must match them.
    """
    return await service.create_preview(rt, caller, request, canvas_id, rev)


@router.post("/replay", status_code=201, response_model=ArtifactRecord,
             openapi_extra=request_body({_JSON: {"schema": body_schema(ReplayDocument)}},
                                        required=True),
             responses=_CREATE_RESPONSES)
async def create_replay(request: Request, canvas_id: CanvasId, rt: Rt,
                        caller: Writer) -> Response:
    return await service.create_replay(rt, caller, request, canvas_id)


@router.post("/audit", status_code=201, response_model=ArtifactRecord,
             openapi_extra=request_body({_JSON: {"schema": body_schema(AuditReport)}},
                                        required=False),
             responses=_CREATE_RESPONSES)
async def create_audit(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                       caller: Writer) -> Response:
    """An empty body creates the pending placeholder report."""
    return await service.create_audit(rt, caller, request, canvas_id, rev)


@router.get("", response_model=ArtifactList, responses=_RESPONSES)
def list_artifacts(canvas_id: CanvasId, rt: Rt, caller: Reader,
                   kind: ArtifactKindName | None = None,
                   rev: Annotated[int | None, Query(ge=0, le=2**53)] = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   cursor: Annotated[str | None, Query(max_length=256)] = None) -> Response:
    page = service.list_artifacts(rt, caller.ctx, canvas_id, kind=kind, rev=rev, limit=limit,
                                  cursor=cursor)
    return OrjsonResponse(page.model_dump(mode="json"))


@router.delete("", responses={**_RESPONSES, 200: {
    "description": "how many artifacts this call deleted",
    "content": {_JSON: {"schema": {"type": "object", "required": ["deleted"], "properties": {
        "deleted": {"type": "integer"}}}}}}})
def delete_canvas_artifacts(canvas_id: CanvasId, rt: Rt, caller: Admin) -> Response:
    """Every artifact of the canvas in the caller's tenant/env (admin or owner)."""
    deleted = lifecycle.delete_canvas(rt, caller.ctx.tenant_id, caller.ctx.env, canvas_id,
                                      _deletion(caller))
    return OrjsonResponse({"deleted": deleted})


@router.get("/export", responses={**_RESPONSES, 200: {
    "description": "a tar: manifest.jsonl, then each payload at {kind}/{artifact_id}.{ext}",
    "content": {"application/x-tar": _BYTES}}})
def export_artifacts(canvas_id: CanvasId, rt: Rt, caller: Reader,
                     kind: ArtifactKindName | None = None) -> Response:
    export.has_live_artifacts(rt, caller.ctx, canvas_id)
    return StreamingResponse(
        export.stream_export(rt, caller.ctx, canvas_id, kind), media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{canvas_id}-artifacts.tar"',
                 "X-Content-Type-Options": "nosniff"})


@router.get("/latest", response_model=ArtifactRecord, responses=_RESPONSES)
def get_latest_artifact(canvas_id: CanvasId, kind: ArtifactKindName, rt: Rt,
                        caller: Reader) -> Response:
    record = service.latest_artifact(rt, caller.ctx, canvas_id, kind)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.get("/{artifact_id}", response_model=ArtifactRecord, responses=_RESPONSES)
@lean(_lean_read)
async def get_artifact(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                       caller: Reader) -> Response:
    record = await service.find_artifact(rt, caller.ctx, canvas_id, artifact_id)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.delete("/{artifact_id}", status_code=204, responses=_RESPONSES)
def delete_artifact(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                    caller: Writer) -> Response:
    """The record, content, lineage route and media_v2 artifact answer 404 from now on;
    the Nexus deletion event stays."""
    lifecycle.delete_artifact(rt, caller.ctx.tenant_id, caller.ctx.env, canvas_id, artifact_id,
                              _deletion(caller))
    return Response(status_code=204)


@router.get("/{artifact_id}/lineage", response_model=Lineage, responses=_RESPONSES)
def get_artifact_lineage(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                         caller: Reader) -> Response:
    lineage = service.lineage(rt, caller.ctx, canvas_id, artifact_id)
    return OrjsonResponse(lineage.model_dump(mode="json"))
