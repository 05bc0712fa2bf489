"""HTTP routes for the end of an artifact's life: delete one, delete a canvas, export.

Beside the canvas routes under the same prefix and tag; mounted before them, so
`/export` is matched before `/{artifact_id}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from engines.auth.tokens import Admin, Caller, Reader, Writer
from engines.canvas_artifacts.models import ArtifactKindName
from engines.http.errors import AUTHENTICATED_ERRORS, BODY_ERRORS, error_responses
from engines.http.fair_share import HeldStreamingResponse, ProcessSlots
from engines.http.head import head_of_stream, is_head
from engines.http.jsonutil import OrjsonResponse
from engines.http.openapi import BINARY, AuthenticatedRoute, request_body
from engines.http.params import ArtifactId, CanvasId
from engines.lifecycle import delete as lifecycle
from engines.lifecycle import export, import_archive
from engines.runtime import Rt

router = APIRouter(prefix="/canvas/{canvas_id}/artifacts", tags=["canvas artifacts"],
                   route_class=AuthenticatedRoute)

_JSON = "application/json"
_TAR = "application/x-tar"
_OCTETS = "application/octet-stream"
_BYTES = {"schema": BINARY}
_RESPONSES: dict[int | str, dict[str, Any]] = error_responses(*AUTHENTICATED_ERRORS, 404)


def _deletion(caller: Caller) -> lifecycle.Deletion:
    return lifecycle.Deletion("deleted", caller.auth.actor_id, caller.ctx.request_id,
                              caller.ctx.correlation_id, caller.ctx.mode)


@router.delete("", responses={**_RESPONSES, 200: {
    "description": "how many artifacts this call deleted",
    "content": {_JSON: {"schema": {"type": "object", "required": ["deleted"], "properties": {
        "deleted": {"type": "integer"}}}}}}})
def delete_canvas_artifacts(canvas_id: CanvasId, rt: Rt, caller: Admin) -> Response:
    """Every artifact of the canvas in the caller's tenant/env (admin or owner)."""
    deleted = lifecycle.delete_canvas(rt, caller.ctx.tenant_id, caller.ctx.env, canvas_id,
                                      _deletion(caller))
    return OrjsonResponse({"deleted": deleted})


@router.get("/export", responses={**_RESPONSES, **error_responses(429), 200: {
    "description": "a tar: manifest.jsonl, then each payload at {kind}/{artifact_id}.{ext}",
    "content": {_TAR: _BYTES}}})
def export_artifacts(request: Request, canvas_id: CanvasId, rt: Rt, caller: Reader,
                     kind: ArtifactKindName | None = None) -> Response:
    """At most EXPORT_CONCURRENCY at once per process (429 beyond); HEAD builds nothing."""
    export.has_live_artifacts(rt, caller.ctx, canvas_id)
    headers = {"Content-Disposition": f'attachment; filename="{canvas_id}-artifacts.tar"',
               "X-Content-Type-Options": "nosniff"}
    if is_head(request):
        return head_of_stream(_TAR, headers)
    slots: ProcessSlots = request.app.state.export_slots
    return HeldStreamingResponse(export.stream_export(rt, caller.ctx, canvas_id, kind),
                                 release=slots.take(), media_type=_TAR, headers=headers)


@router.delete("/{artifact_id}", status_code=204, responses=_RESPONSES)
def delete_artifact(canvas_id: CanvasId, artifact_id: ArtifactId, rt: Rt,
                    caller: Writer) -> Response:
    """The record, content, lineage route and media_v2 artifact answer 404 from now on;
    the Nexus deletion event stays."""
    lifecycle.delete_artifact(rt, caller.ctx.tenant_id, caller.ctx.env, canvas_id, artifact_id,
                              _deletion(caller))
    return Response(status_code=204)


@router.post("/import", response_model=import_archive.ImportReport,
             responses={**_RESPONSES, **error_responses(*BODY_ERRORS, 413, 415)},
             # the tar as bytes (application/x-tar is accepted too): what generators can send
             openapi_extra=request_body({_OCTETS: _BYTES}, required=True))
async def import_artifacts(request: Request, canvas_id: CanvasId, rt: Rt,
                           caller: Admin) -> Response:
    """Restore an export (the tar `GET .../export` answers) into this canvas of the
    caller's tenant/env (admin or owner). Records, ids and bytes are kept; an id already
    in use is a 409 for that artifact, a payload that does not match its record a 422 for
    it, and the rest goes on; an archive that is not an export is a 422, nothing written."""
    report = await import_archive.import_upload(rt, caller, request, canvas_id)
    return OrjsonResponse(report.model_dump(mode="json"))
