"""Routes over a whole tenant/env rather than one canvas: `GET /artifacts`, `GET /canvases`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from engines.auth.tokens import Reader
from engines.canvas_artifacts import listing
from engines.canvas_artifacts.models import ArtifactKindName, ArtifactList
from engines.canvas_artifacts.router import _RESPONSES
from engines.http.jsonutil import OrjsonResponse
from engines.http.openapi import AuthenticatedRoute
from engines.http.params import CanvasIdQuery, Limit, PageCursor
from engines.runtime import Rt

router = APIRouter(tags=["canvas artifacts"], route_class=AuthenticatedRoute)
Created = Annotated[datetime | None, Query(description="ISO-8601; exclusive bound on "
                                                       "created_at (no offset: UTC)")]


@router.get("/artifacts", response_model=ArtifactList, responses=_RESPONSES)
def list_tenant_artifacts(rt: Rt, caller: Reader, kind: ArtifactKindName | None = None,
                          canvas_id: CanvasIdQuery = None, created_after: Created = None,
                          created_before: Created = None, limit: Limit = 50,
                          cursor: PageCursor = None) -> Response:
    """Every live artifact of the caller's tenant/env, newest first, across canvases."""
    page = listing.list_artifacts(rt, caller.ctx, kind=kind, canvas_id=canvas_id,
                                  created_after=created_after, created_before=created_before,
                                  limit=limit, cursor=cursor)
    return OrjsonResponse(page.model_dump(mode="json"))


@router.get("/canvases", response_model=listing.CanvasList, responses=_RESPONSES)
def list_canvases(rt: Rt, caller: Reader, limit: Limit = 50,
                  cursor: PageCursor = None) -> Response:
    """The canvases of the caller's tenant/env that hold a live artifact (canvas id
    order), with per-kind counts and each kind's latest artifact id."""
    page = listing.list_canvases(rt, caller.ctx, limit=limit, cursor=cursor)
    return OrjsonResponse(page.model_dump(mode="json"))
