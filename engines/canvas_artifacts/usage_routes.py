"""GET /usage: what the caller's (tenant, env) stores, per kind, and the quotas in force."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.tokens import Caller, reader
from engines.canvas_artifacts import quotas
from engines.db.engine import retry_on_disconnect
from engines.http.errors import AUTHENTICATED_ERRORS, error_responses
from engines.http.jsonutil import OrjsonResponse
from engines.http.openapi import AuthenticatedRoute
from engines.runtime import Runtime, get_runtime

router = APIRouter(tags=["usage"], route_class=AuthenticatedRoute)


class KindUsage(BaseModel):
    bytes: int
    count: int


class QuotaUsage(BaseModel):
    env: str
    """The quota's env, or `*`: a limit on the tenant's total over every env."""
    max_bytes: int | None
    max_artifacts: int | None
    used_bytes: int
    used_artifacts: int


class Usage(BaseModel):
    tenant_id: str
    env: str
    kinds: dict[str, KindUsage]
    total: KindUsage
    quotas: list[QuotaUsage]


@retry_on_disconnect
def _report(rt: Runtime, tenant_id: str, env: str) -> dict[str, object]:
    with rt.engine.connect() as conn:
        return quotas.usage_report(conn, tenant_id, env)


@router.get("/usage", response_model=Usage, responses=error_responses(*AUTHENTICATED_ERRORS))
async def get_usage(rt: Annotated[Runtime, Depends(get_runtime)],
                    caller: Annotated[Caller, Depends(reader)]) -> Response:
    """Live artifacts of the caller's tenant/env: bytes and count per kind, and every
    quota that applies (`engines quota`) with the usage it is measured against."""
    report = await run_in_threadpool(_report, rt, caller.ctx.tenant_id, caller.ctx.env)
    return OrjsonResponse(report)
