"""media_v2 HTTP routes, authenticated and tenant/env scoped like the canvas ones."""

from __future__ import annotations

import hashlib
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from engines.auth.tokens import Caller, Reader, Writer
from engines.db.idempotency import IdempotencyClaim, claim_from
from engines.http.body import read_limited, request_media_type, require_json
from engines.http.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    Unprocessable,
    UnsupportedMediaType,
    error_responses,
    first_error_message,
)
from engines.http.jsonutil import OrjsonResponse, parse_json
from engines.http.openapi import AuthenticatedRoute, FileUpload, body_schema, request_body
from engines.http.params import MAX_ID_LENGTH, SAFE_ID_PATTERN, SafeId
from engines.media_v2 import service
from engines.media_v2.models import (
    ArtifactCreate,
    AssetCreate,
    AssetDetail,
    AssetList,
    DerivedArtifact,
    MediaAsset,
)
from engines.runtime import Rt, Runtime

JSON_LIMIT = 1024 * 1024

router = APIRouter(prefix="/media-v2", tags=["media_v2"], route_class=AuthenticatedRoute)
Id = SafeId
_READ_ERRORS = error_responses(*AUTHENTICATED_ERRORS)
_GET_ERRORS = error_responses(*AUTHENTICATED_ERRORS, 404)
M = TypeVar("M", bound=BaseModel)


async def _json_body(request: Request, rt: Runtime, model: type[M]) -> tuple[M, str]:
    """The validated model and the sha256 of the raw body (for idempotency)."""
    require_json(request)
    raw = await read_limited(request, JSON_LIMIT)
    data = parse_json(raw, max_depth=rt.settings.max_json_depth)
    try:
        return model.model_validate(data), hashlib.sha256(raw).hexdigest()
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="media_v2.invalid") from exc


def _claim(request: Request, caller: Caller) -> IdempotencyClaim | None:
    return claim_from(request, caller.ctx, caller.auth.actor_id)


def _dump(model: BaseModel) -> Response:
    return OrjsonResponse(model.model_dump(mode="json"))


@router.post("/assets", status_code=201, response_model=MediaAsset,
             responses=error_responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS),
             openapi_extra=request_body({
                 "application/json": {"schema": body_schema(AssetCreate)},
                 "multipart/form-data": {"schema": body_schema(FileUpload)}}, required=True))
async def create_media_asset(request: Request, rt: Rt, caller: Writer) -> Response:
    """A multipart `file` upload, or JSON registering an existing source URI."""
    content_type = request_media_type(request)
    if content_type == "multipart/form-data":
        return await service.create_asset_upload(rt, caller.ctx, caller.auth.actor_id, request)
    if content_type == "application/json":
        body, sha = await _json_body(request, rt, AssetCreate)
        return await service.create_asset_json(rt, caller.ctx, caller.auth.actor_id, body,
                                               _claim(request, caller), sha)
    raise UnsupportedMediaType("send multipart/form-data with a file, or application/json")


@router.get("/assets", response_model=AssetList, responses=_READ_ERRORS)
def list_media_assets(rt: Rt, caller: Reader, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                cursor: Annotated[str | None, Query(pattern=SAFE_ID_PATTERN,
                                                     max_length=MAX_ID_LENGTH)] = None,
                ) -> Response:
    return _dump(service.list_assets(rt, caller.ctx, limit=limit, before_id=cursor))


@router.get("/assets/{asset_id}", response_model=AssetDetail, responses=_GET_ERRORS)
def get_media_asset(asset_id: Id, rt: Rt, caller: Reader) -> Response:
    return _dump(service.get_asset(rt, caller.ctx, asset_id))


@router.post("/assets/{asset_id}/artifacts", status_code=201, response_model=DerivedArtifact,
             responses=error_responses(*AUTHENTICATED_ERRORS, 404, *BODY_ERRORS),
             openapi_extra=request_body(
                 {"application/json": {"schema": body_schema(ArtifactCreate)}}, required=True))
async def register_media_artifact(asset_id: Id, request: Request, rt: Rt,
                                  caller: Writer) -> Response:
    body, sha = await _json_body(request, rt, ArtifactCreate)
    return await service.register_artifact(rt, caller.ctx, asset_id, body,
                                           _claim(request, caller), sha)


@router.get("/artifacts/{artifact_id}", response_model=DerivedArtifact, responses=_GET_ERRORS)
def get_media_artifact(artifact_id: Id, rt: Rt, caller: Reader) -> Response:
    return _dump(service.get_artifact(rt, caller.ctx, artifact_id))
