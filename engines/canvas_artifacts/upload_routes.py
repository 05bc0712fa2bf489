"""Routes of upload sessions (uploads.py): open, inspect, complete, abort, and the PUT of
a part to a signed part URL of the local store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.tokens import Writer
from engines.canvas_artifacts import uploads
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.router import _CREATE_RESPONSES, _RESPONSES
from engines.http.errors import error_responses
from engines.http.openapi import BINARY, AuthenticatedRoute, body_schema, request_body
from engines.http.params import CanvasId, Rev, SafeId
from engines.runtime import Rt

router = APIRouter(prefix="/canvas/{canvas_id}/artifacts/preview/uploads",
                   tags=["upload sessions"], route_class=AuthenticatedRoute)
parts = APIRouter(tags=["upload sessions"])

UploadId = SafeId
_SESSION_RESPONSES = {**_RESPONSES, **error_responses(409)}


@router.post("", status_code=201, response_model=uploads.UploadSession,
             responses=_CREATE_RESPONSES, openapi_extra=request_body(
                 {"application/json": {"schema": body_schema(uploads.OpenUpload)}},
                 required=True))
async def open_upload(request: Request, canvas_id: CanvasId, rev: Rev, rt: Rt,
                      caller: Writer) -> Response:
    """Open a session for a preview of `size_bytes` bytes of `mime_type` (one of the
    preview types; the bytes must prove it, as on a direct create). Answers a URL per
    part: PUT each part's bytes to it (S3: presigned, straight to the bucket), then
    POST .../complete. Size limit and quota are checked here and again on complete."""
    return await uploads.open_session(rt, caller, request, canvas_id, rev)


@router.get("/{upload_id}", response_model=uploads.UploadSession, responses=_RESPONSES)
async def get_upload(request: Request, canvas_id: CanvasId, upload_id: UploadId, rt: Rt,
                     caller: Writer) -> Response:
    """The session, with the parts the store holds and fresh URLs: how a client resumes."""
    session = await run_in_threadpool(uploads.find, rt, caller.ctx, canvas_id, upload_id)
    view = await uploads.view(rt, request, session)
    return Response(view.model_dump_json(), media_type="application/json")


@router.post("/{upload_id}/complete", status_code=201, response_model=ArtifactRecord,
             responses=_CREATE_RESPONSES)
async def complete_upload(request: Request, canvas_id: CanvasId, upload_id: UploadId, rt: Rt,
                          caller: Writer) -> Response:
    """Verify size, sha256 (if declared) and the content type's magic bytes, then create
    the artifact as a direct create does. A mismatch is 422 and nothing is stored (a
    missing part, `upload.incomplete`, leaves the session open). Repeating it answers
    the same record."""
    return await uploads.complete(rt, caller, request, canvas_id, upload_id)


@router.delete("/{upload_id}", status_code=204, responses=_SESSION_RESPONSES)
async def abort_upload(canvas_id: CanvasId, upload_id: UploadId, rt: Rt,
                       caller: Writer) -> Response:
    """Abort an open session: its parts are removed, no artifact is created."""
    await uploads.abort(rt, caller, canvas_id, upload_id)
    return Response(status_code=204)


_PART_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(403, 404, 408, 409, 413, 503),
    200: {"description": "the part is stored", "content": {"application/json": {"schema": {
        "type": "object", "required": ["part_number", "size"], "properties": {
            "part_number": {"type": "integer"}, "size": {"type": "integer"}}}}}}}


@parts.put(uploads.PART_PATH, responses=_PART_RESPONSES, openapi_extra={
    **request_body({"application/octet-stream": {"schema": BINARY}}, required=True),
    "parameters": [{"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
                   for name in ("exp", "sig")]})
async def put_part(request: Request, session_id: UploadId,
                   part_number: Annotated[int, Path(ge=1, le=uploads.MAX_PARTS)],
                   rt: Rt) -> Response:
    """A part URL of the local store, as a session answered it: no other header. A part
    sent again replaces the earlier one."""
    return await uploads.put_part(rt, request, session_id, part_number)
