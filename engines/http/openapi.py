"""The OpenAPI document as client generators and Swagger UI need it.

Our routes read their own bodies (streamed, under byte limits) and check the
bearer token and routing headers in a fixed order (401, then 400, then 403),
so FastAPI cannot infer those parts of the document. They are declared here,
once, for the document only; no request is validated differently because of
them:

- `AuthenticatedRoute` adds the bearer security requirement and the routing
  and trace headers (plus `Idempotency-Key` on POSTs) to every route of a
  router. Declared as FastAPI `Header(...)` parameters they would be
  validated before the auth dependency runs: a missing `X-Tenant-Id` would be
  a 422 and an unauthenticated caller would learn about it before its 401.
- `body_schema(Model)` references a request-body model as a component and
  `install_openapi` adds those components (nested models included), so no
  body points at a `#/$defs/...` the document does not have.
- `operation_id` makes each operationId the endpoint's name
  (`create_preview`, `get_artifact_content`), which generated clients use as
  their function names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from engines.http.params import (
    ENVS,
    IDEMPOTENCY_KEY_MAX,
    MODES,
    SAFE_ID_PATTERN,
    TENANT_RE,
    TRACE_ID_RE,
)

DESCRIPTION = """\
Stores what a collaborative canvas produces, one set per canvas revision: previews
(images or render-refs), replays and audits, scoped by tenant and env.

**Every call** except `/`, `/healthz`, `/readyz`, `/docs`, `/openapi.json` and the signed
content URLs (`/signed/...`, which carry their own signature) needs these headers:

| header | value |
| --- | --- |
| `Authorization` | `Bearer <JWT>`; missing or invalid: 401 |
| `X-Tenant-Id` | a tenant listed in the token's `tenant_ids` (`t_...`); another one: 403 |
| `X-Env` | `dev`, `staging` or `prod`; missing: 400 |
| `X-Project-Id` | the project, recorded in lineage; missing: 400 |

Optional: `X-Workspace-Id`, `X-Surface-Id`, `X-App-Id` (recorded in lineage),
`X-Request-Id` and `X-Correlation-Id` (echoed back), `Idempotency-Key` on POSTs.

**Getting a token.** Tokens are JWTs: HS256 signed with the server's `AUTH_JWT_SIGNING`
(claims `sub`, `tenant_ids`, `role_map` {tenant: owner, admin, member or viewer}, `exp`),
or issued by the identity provider behind `AUTH_JWKS_URL`. On a development server,
`engines token --tenant t_demo --sub u_me --role member` prints one, and `engines serve`
on the embedded default prints a ready-to-paste `curl` line with an owner token.
"""

TAGS = [
    {"name": "canvas artifacts", "description": "create, list and fetch previews, replays "
     "and audits of a canvas"},
    {"name": "signed urls", "description": "header-free, expiring links to one artifact's "
     "content, for `<img src>`"},
    {"name": "events", "description": "server-sent events of artifacts written and deleted"},
    {"name": "webhooks", "description": "signed POSTs of the same events to your endpoint"},
    {"name": "media_v2", "description": "the asset registry every artifact is recorded in"},
    {"name": "upload sessions", "description": "large previews sent in parts, straight to "
     "the bucket when it is S3"},
    {"name": "usage", "description": "the caller's tenant/env usage against its quotas"},
]
"""The document's tag order, which Swagger UI follows: the canvas artifacts first."""

BEARER_SCHEME = "bearer"
SECURITY_SCHEMES = {BEARER_SCHEME: {
    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
    "description": "a JWT listing the tenant in `tenant_ids` (dev: `engines token`)"}}
BINARY = {"type": "string", "format": "binary"}
"""A raw byte body: generators type it as a file (requests) or bytes (responses)."""
COMPONENT_REF = "#/components/schemas/{model}"


class FileUpload(BaseModel):
    """A multipart/form-data body: one part named `file`, the bytes to store."""

    file: bytes = Field(json_schema_extra={"format": "binary"})


def _header(name: str, schema: dict[str, Any], description: str, *,
            required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": schema}


ENV_SCHEMA = {"type": "string", "enum": sorted(ENVS), "title": "Env"}
"""A component, so that a generated client has one Env enum, not one per operation."""
_ID = {"type": "string", "pattern": SAFE_ID_PATTERN, "maxLength": 128}
_TRACE = {"type": "string", "pattern": TRACE_ID_RE.pattern}
ROUTING_HEADERS: tuple[dict[str, Any], ...] = (
    _header("X-Tenant-Id", {"type": "string", "pattern": TENANT_RE.pattern, "maxLength": 64},
            "tenant (isolation boundary); must be one of the token's tenants", required=True),
    _header("X-Env", {"$ref": COMPONENT_REF.format(model="Env")},
            "environment (isolation boundary); `stage` means staging, case is ignored",
            required=True),
    _header("X-Mode", {"type": "string", "enum": list(MODES)},
            "saas, enterprise or lab (the later engines contract), recorded in lineage; "
            "required, and X-Env refused, under ROUTING_MODE=mode (docs/routing-mode.md)"),
    _header("X-Project-Id", _ID, "project, recorded in lineage", required=True),
    _header("X-Workspace-Id", _ID, "workspace, recorded in lineage"),
    _header("X-Surface-Id", _ID, "surface, recorded in lineage"),
    _header("X-App-Id", _ID, "app, recorded in lineage"),
    _header("X-Request-Id", _TRACE, "echoed back; a new one is made when absent or malformed"),
    _header("X-Correlation-Id", _TRACE, "echoed back; defaults to the request id"),
)
IDEMPOTENCY_HEADER = _header(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX,
     "pattern": r"^[^\x00-\x1f\x7f]+$"},
    "retrying with the same key and body returns the first response instead of a second "
    "artifact; the same key with another body is a 409")


class AuthenticatedRoute(APIRoute):
    """A route behind `reader`/`writer`: documents the bearer token and the headers.

    Set as a router's `route_class`, so every route added to it, now or later,
    carries them; a route's own `openapi_extra` parameters come after these.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = copy.deepcopy(kwargs.get("openapi_extra") or {})
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        headers = [*ROUTING_HEADERS, *([IDEMPOTENCY_HEADER] if "POST" in methods else [])]
        extra["parameters"] = [*headers, *extra.get("parameters", [])]
        extra.setdefault("security", [{BEARER_SCHEME: []}])
        kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)


_BODY_MODELS: dict[str, type[BaseModel]] = {}


def body_schema(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to `model` as a component; `install_openapi` adds the component."""
    _BODY_MODELS[model.__name__] = model
    return {"$ref": COMPONENT_REF.format(model=model.__name__)}


def request_body(content: dict[str, dict[str, Any]], *, required: bool) -> dict[str, Any]:
    """`openapi_extra` for a body the route reads itself, by media type."""
    return {"requestBody": {"required": required, "content": content}}


def body_components(models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """Component schemas of the models and of every model nested in them."""
    _, top = models_json_schema([(model, "validation") for model in models],
                                ref_template=COMPONENT_REF)
    return dict(top.get("$defs", {}))


def _add_components(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in (*body_components(list(_BODY_MODELS.values())).items(),
                         ("Env", ENV_SCHEMA)):
        if schemas.setdefault(name, schema) != schema:
            raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)


def operation_id(route: APIRoute) -> str:
    """The endpoint's name; names are unique across the app (a test checks)."""
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Complete the generated document once, when it is first built."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_components(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
