"""HTTP routes for canvas artifacts: thin, the service does the work."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.canvas_artifacts import service
from engines.canvas_artifacts.models import (
    ArtifactKindName,
    ArtifactList,
    ArtifactRecord,
    AuditReport,
    RenderRef,
    ReplayDocument,
)
from engines.canvas_artifacts.sniff import MAGIC
from engines.common.errors import AUTHENTICATED_ERRORS, error_responses
from engines.common.jsonutil import OrjsonResponse
from engines.common.runtime import Runtime, get_runtime
from engines.identity.auth import Caller, reader, writer

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

router = APIRouter(prefix="/canvas/{canvas_id}/artifacts", tags=["canvas artifacts"])


# SAFE_ID without `..`, written without look-arounds (pydantic's regex engine has none).
# A plain path parameter, not a dependency that raises: dependencies run before request
# validation, so an unauthenticated caller must get 401 here, never a 422.
CANVAS_ID = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
CanvasId = Annotated[str, Path(pattern=CANVAS_ID, max_length=128)]
ArtifactId = Annotated[str, Path(pattern=SAFE_ID)]
Rev = Annotated[int, Query(ge=0, le=2**53, description="canvas revision")]
Rt = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]

_JSON = "application/json"


def _body_doc(schemas: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": False, "content": schemas}}


_PREVIEW_BODY = _body_doc({
    **{mime: {"schema": {"type": "string", "format": "binary"}} for mime in MAGIC},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
    _JSON: {"schema": RenderRef.model_json_schema()},
})
_RESPONSES = error_responses(*AUTHENTICATED_ERRORS, 404)
_CREATE_RESPONSES = {**_RESPONSES, **error_responses(409, 413, 415)}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES, **error_responses(416),
    200: {"description": "the payload: preview bytes, or the replay/audit JSON",
          "content": {**{mime: _BINARY for mime in MAGIC}, _JSON: {"schema": {}}}},
    # a slice of a JSON document is not JSON: the type is declared, no body schema
    206: {"description": "one byte range of the payload",
          "content": {**{mime: _BINARY for mime in MAGIC}, _JSON: {}}},
    304: {"description": "not modified (If-None-Match)"},
    307: {"description": "render-ref, or a presigned URL in redirect serve mode"},
}


@router.post("/preview", status_code=201, response_model=ArtifactRecord,
             openapi_extra=_PREVIEW_BODY, responses=_CREATE_RESPONSES)
async def create_preview(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                         caller: Writer) -> Response:
    """Raw image body, multipart `file`, or JSON render-ref `{uri, mime_type}`."""
    return await service.create_preview(rt, caller, request, canvas_id, rev)


@router.post("/replay", status_code=201, response_model=ArtifactRecord,
             openapi_extra=_body_doc({_JSON: {"schema": ReplayDocument.model_json_schema()}}),
             responses=_CREATE_RESPONSES)
async def create_replay(request: Request, canvas_id: CanvasId, rt: Rt,
                        caller: Writer) -> Response:
    return await service.create_replay(rt, caller, request, canvas_id)


@router.post("/audit", status_code=201, response_model=ArtifactRecord,
             openapi_extra=_body_doc({_JSON: {"schema": AuditReport.model_json_schema()}}),
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


@router.get("/latest", response_model=ArtifactRecord, responses=_RESPONSES)
def latest(canvas_id: CanvasId, kind: ArtifactKindName, rt: Rt, caller: Reader) -> Response:
    record = service.latest_artifact(rt, caller.ctx, canvas_id, kind)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.get("/{artifact_id}", response_model=ArtifactRecord, responses=_RESPONSES)
def get_artifact(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                 caller: Reader) -> Response:
    record = service.get_artifact(rt, caller.ctx, canvas_id, artifact_id)
    return OrjsonResponse(record.model_dump(mode="json"))


@router.get("/{artifact_id}/content", responses=_CONTENT_RESPONSES, openapi_extra={
    # Read from the request by serve_blob, so FastAPI cannot see them: listed
    # here so that clients (and the schema fuzz) know they are honoured.
    "parameters": [{"name": name, "in": "header", "required": False,
                    "schema": {"type": "string"}}
                   for name in ("Range", "If-Range", "If-None-Match")]})
async def get_content(request: Request, canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                      caller: Reader,
                      from_ms: Annotated[int | None, Query(ge=0)] = None,
                      to_ms: Annotated[int | None, Query(ge=0)] = None,
                      disposition: Literal["attachment", "inline"] = "attachment") -> Response:
    """Bytes with ETag/Range/If-Range/If-None-Match; replay windows with from_ms/to_ms."""
    record = await run_in_threadpool(service.get_artifact, rt, caller.ctx, canvas_id, artifact_id)
    return await service.content(rt, request, record, from_ms=from_ms, to_ms=to_ms,
                                 inline=disposition == "inline")


@router.get("/{artifact_id}/lineage", responses=_RESPONSES)
def get_lineage(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                caller: Reader) -> Response:
    return OrjsonResponse(service.lineage(rt, caller.ctx, canvas_id, artifact_id))
