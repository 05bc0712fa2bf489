"""The auth matrix (docs/http.md: headers, roles, tenants), every row, on both backend stacks.

Each row is exercised against a read and a write route of both route
families (canvas artifacts and media_v2), because both mount the same
`reader` / `writer` dependencies and a regression in either wiring must show.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from conftest import SIGNING_KEY, Stack, local_settings, make_bucket, new_canvas, s3_pg_settings
from engines.app import build_runtime, create_app
from engines.auth.tests.claims import claims


@pytest.fixture(scope="module", params=["local-sqlite", "s3-postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          sqlite_template: Path) -> Iterator[Stack]:
    """The root `stack` fixture's two backends, built once per module instead of per test.

    The matrix only reads or creates records under unique ids and asserts on
    status codes, so tests cannot disturb one another; sharing the stack keeps
    about a hundred requests per backend well inside the suite's time budget.
    """
    tmp_path = tmp_path_factory.mktemp(f"auth-{request.param}")
    if request.param == "local-sqlite":
        settings = local_settings(tmp_path, sqlite_template)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = s3_pg_settings(tmp_path, endpoint, make_bucket(endpoint),
                                  request.getfixturevalue("pg_url"))
    runtime = build_runtime(settings)
    client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
    yield Stack(name=request.param, settings=settings, runtime=runtime, client=client)
    client.close()
    runtime.engine.dispose()


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    write: bool
    body: dict[str, Any]

    def call(self, stack: Stack, headers: dict[str, str]):
        return stack.client.request(self.method, self.path, headers=headers, **self.body)


CANVAS = new_canvas()
ROUTES = [
    Route("canvas-list", "GET", f"/canvas/{CANVAS}/artifacts", False, {}),
    Route("canvas-audit", "POST", f"/canvas/{CANVAS}/artifacts/audit?rev=1", True, {}),
    Route("media-list", "GET", "/media-v2/assets", False, {}),
    Route("media-create", "POST", "/media-v2/assets", True,
          {"json": {"source_uri": "https://cdn.example.com/a.png", "kind": "image"}}),
]
READS = [r for r in ROUTES if not r.write]
WRITES = [r for r in ROUTES if r.write]


def routing(tenant: str = "t_acme", env: str = "dev") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-Env": env, "X-Project-Id": "p_main"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope(response, status: int, code_prefix: str | None = None) -> dict[str, Any]:
    """The one error shape, with the request id of the call in body and headers."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    if code_prefix:
        assert error["code"].startswith(code_prefix), error
    return error


def call_all(stack: Stack, routes: list[Route], headers: dict[str, str], status: int,
             code_prefix: str | None = None) -> None:
    """Call every route with a fresh X-Request-Id and check it comes back in the envelope."""
    for route in routes:
        request_id = f"req-{route.name}-{uuid.uuid4().hex[:8]}"
        response = route.call(stack, {**headers, "X-Request-Id": request_id})
        error = assert_envelope(response, status, code_prefix)
        assert error["request_id"] == request_id, route.name
        if status == 401:
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


# ---- 401: the token ---------------------------------------------------------


def test_no_authorization_header_is_401(stack: Stack) -> None:
    call_all(stack, ROUTES, routing(), 401, "auth.")


def test_non_bearer_scheme_is_401(stack: Stack) -> None:
    for value in ["Basic dV9hbmE6cGFzc3dvcmQ=", "Token {token}",
                  "{token}",                    # the token without any scheme
                  "Bearer", "Bearer    "]:      # the scheme without a token
        header = {"Authorization": value.format(token=stack.token())}
        call_all(stack, ROUTES, {**routing(), **header}, 401, "auth.")


def test_garbage_token_is_401(stack: Stack) -> None:
    for token in ["garbage", "a.b.c", "e30.e30.", "...", "x" * 4096]:
        call_all(stack, ROUTES, {**routing(), **bearer(token)}, 401, "auth.")


def test_token_signed_with_wrong_key_is_401(stack: Stack) -> None:
    token = jwt.encode(claims(), "another-key-" + "z" * 40, algorithm="HS256")
    call_all(stack, ROUTES, {**routing(), **bearer(token)}, 401, "auth.")


def test_bearer_scheme_is_case_insensitive(stack: Stack) -> None:
    """RFC 6750 schemes are case-insensitive; `bearer` must not be a 401."""
    headers = {**routing(), "Authorization": f"bearer {stack.token()}"}
    for route in READS:
        assert route.call(stack, headers).status_code == 200, route.name


# ---- 403: membership and role -------------------------------------------------


def test_tenant_not_in_token_is_403(stack: Stack) -> None:
    token = stack.token("t_acme", role="owner")
    call_all(stack, ROUTES, {**routing("t_beta"), **bearer(token)}, 403, "auth.")


def test_token_with_no_tenants_is_403(stack: Stack) -> None:
    token = jwt.encode(claims(tenant_ids=[], role_map={}), SIGNING_KEY, algorithm="HS256")
    call_all(stack, ROUTES, {**routing(), **bearer(token)}, 403, "auth.")


def test_role_map_alone_grants_nothing(stack: Stack) -> None:
    """role_map for a tenant that is not in tenant_ids does not make it a member."""
    token = jwt.encode(claims(tenant_ids=["t_acme"], role_map={"t_acme": "member",
                                                               "t_beta": "owner"}),
                       SIGNING_KEY, algorithm="HS256")
    call_all(stack, ROUTES, {**routing("t_beta"), **bearer(token)}, 403, "auth.")


# ---- 403: the optional envs claim ------------------------------------------------


def test_envs_claim_limits_the_token_to_those_envs(stack: Stack) -> None:
    """A member limited to dev and staging reads and writes there, and nowhere else."""
    token = jwt.encode(claims(envs=["dev", "stage"]), SIGNING_KEY, algorithm="HS256")
    for env in ("dev", "staging", "stage"):
        headers = {**routing(env=env), **bearer(token)}
        for route in ROUTES:
            assert route.call(stack, headers).status_code in (200, 201), (env, route.name)
    call_all(stack, ROUTES, {**routing(env="prod"), **bearer(token)}, 403,
             "auth.env_forbidden")


def test_token_without_envs_claim_is_valid_in_every_env(stack: Stack) -> None:
    for env in ("dev", "staging", "prod"):
        headers = stack.headers(env=env)
        for route in ROUTES:
            assert route.call(stack, headers).status_code in (200, 201), (env, route.name)


def test_empty_envs_claim_is_valid_nowhere(stack: Stack) -> None:
    token = jwt.encode(claims(envs=[]), SIGNING_KEY, algorithm="HS256")
    call_all(stack, ROUTES, {**routing(), **bearer(token)}, 403, "auth.env_forbidden")


def test_malformed_envs_claim_is_401(stack: Stack) -> None:
    for envs in ("dev", ["qa"], [1], {"dev": True}):
        token = jwt.encode(claims(envs=envs), SIGNING_KEY, algorithm="HS256")
        call_all(stack, ROUTES, {**routing(), **bearer(token)}, 401, "auth.")


def test_viewer_reads_but_cannot_write(stack: Stack) -> None:
    headers = stack.headers(role="viewer")
    for route in READS:
        assert route.call(stack, headers).status_code == 200, route.name
    call_all(stack, WRITES, headers, 403, "auth.")


def test_writer_roles_can_write(stack: Stack) -> None:
    for role in ("member", "admin", "owner"):
        headers = stack.headers(role=role)
        for route in WRITES:
            response = route.call(stack, headers)
            assert response.status_code == 201, (role, route.name, response.text)
        for route in READS:
            assert route.call(stack, headers).status_code == 200, (role, route.name)


def test_tenant_without_role_map_entry_is_viewer(stack: Stack) -> None:
    token = jwt.encode(claims(tenant_ids=["t_acme", "t_beta"], role_map={"t_acme": "member"}),
                       SIGNING_KEY, algorithm="HS256")
    beta = {**routing("t_beta"), **bearer(token)}
    for route in READS:
        assert route.call(stack, beta).status_code == 200, route.name
    call_all(stack, WRITES, beta, 403, "auth.")
    # the same token keeps its member rights on the tenant it has a role for
    acme = {**routing("t_acme"), **bearer(token)}
    for route in WRITES:
        assert route.call(stack, acme).status_code == 201, route.name


def test_missing_role_map_claim_makes_every_tenant_viewer(stack: Stack) -> None:
    token = jwt.encode(claims(role_map=None), SIGNING_KEY, algorithm="HS256")
    headers = {**routing(), **bearer(token)}
    for route in READS:
        assert route.call(stack, headers).status_code == 200, route.name
    call_all(stack, WRITES, headers, 403, "auth.")


def test_unknown_role_is_viewer(stack: Stack) -> None:
    token = jwt.encode(claims(role_map={"t_acme": "superuser"}), SIGNING_KEY, algorithm="HS256")
    headers = {**routing(), **bearer(token)}
    for route in READS:
        assert route.call(stack, headers).status_code == 200, route.name
    call_all(stack, WRITES, headers, 403, "auth.")


def test_default_tenant_does_not_replace_the_header(stack: Stack) -> None:
    """default_tenant_id is informational: without X-Tenant-Id it is still 400."""
    headers = stack.headers()
    del headers["X-Tenant-Id"]
    call_all(stack, ROUTES, headers, 400, "request.")


# ---- 400: routing headers ------------------------------------------------------


ROUTING = ("X-Tenant-Id", "X-Env", "X-Project-Id")
MALFORMED = [
    ("X-Tenant-Id", "acme"),
    ("X-Tenant-Id", "t_ACME"),
    ("X-Tenant-Id", "t_acme/../t_beta"),
    ("X-Tenant-Id", "t_"),
    ("X-Tenant-Id", "t_" + "a" * 80),
    ("X-Env", "qa"),
    ("X-Env", "production"),
    ("X-Env", "dev/../prod"),
    ("X-Project-Id", "../p_main"),
    ("X-Project-Id", "p main"),
    ("X-Project-Id", "p_" + "x" * 200),
    ("X-Workspace-Id", "../ws"),
]


def test_missing_routing_header_is_400(stack: Stack) -> None:
    for missing in ROUTING:
        headers = stack.headers()
        del headers[missing]
        call_all(stack, ROUTES, headers, 400, "request.")


def test_empty_routing_header_is_400(stack: Stack) -> None:
    for missing in ROUTING:
        call_all(stack, ROUTES, {**stack.headers(), missing: ""}, 400, "request.")


def test_malformed_routing_header_is_400(stack: Stack) -> None:
    for header, value in MALFORMED:
        call_all(stack, ROUTES, {**stack.headers(), header: value}, 400, "request.")


def test_routing_headers_are_checked_before_membership(stack: Stack) -> None:
    """A malformed tenant is a 400 even when the token would not cover it."""
    call_all(stack, ROUTES, {**stack.headers(), "X-Tenant-Id": "beta"}, 400, "request.")


def test_token_is_checked_before_routing_headers(stack: Stack) -> None:
    """No token and no routing headers: the 401 wins, nothing is revealed."""
    call_all(stack, ROUTES, {}, 401, "auth.")


def test_stage_is_accepted_as_staging(stack: Stack) -> None:
    stage = stack.headers(env="stage")
    staging = stack.headers(env="staging")
    canvas = new_canvas()

    created = stack.client.post(f"/canvas/{canvas}/artifacts/audit?rev=3", headers=stage)
    assert created.status_code == 201, created.text
    assert created.json()["env"] == "staging"
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=staging).json()["items"]
    assert [item["id"] for item in listed] == [created.json()["id"]]
    for env in ("STAGE", "Staging"):
        got = stack.client.get(f"/canvas/{canvas}/artifacts/{created.json()['id']}",
                               headers=stack.headers(env=env))
        assert got.status_code == 200, env

    asset = stack.client.post("/media-v2/assets", headers=stage,
                              json={"source_uri": "https://cdn.example.com/s.png"})
    assert asset.status_code == 201, asset.text
    assert asset.json()["env"] == "staging"
    ids = [a["id"] for a in stack.client.get("/media-v2/assets", headers=staging).json()["items"]]
    assert asset.json()["id"] in ids
    # and staging is not dev or prod
    for env in ("dev", "prod"):
        ids = [a["id"] for a in stack.client.get("/media-v2/assets",
                                                 headers=stack.headers(env=env)).json()["items"]]
        assert asset.json()["id"] not in ids


# ---- trace ids and unauthenticated endpoints -------------------------------------


def test_request_id_generated_when_absent(stack: Stack) -> None:
    for route in ROUTES:
        response = route.call(stack, routing())
        error = assert_envelope(response, 401)
        assert len(error["request_id"]) >= 16
        assert response.headers["x-correlation-id"]


def test_correlation_id_echoed_on_errors(stack: Stack) -> None:
    response = stack.client.get("/media-v2/assets",
                                headers={**routing("t_beta"), **bearer(stack.token()),
                                         "X-Request-Id": "r-1", "X-Correlation-Id": "c-1"})
    assert_envelope(response, 403)
    assert response.headers["x-request-id"] == "r-1"
    assert response.headers["x-correlation-id"] == "c-1"


def test_hostile_request_id_is_replaced(stack: Stack) -> None:
    """An X-Request-Id that could inject into logs or headers is not echoed."""
    response = stack.client.get("/media-v2/assets",
                                headers={**routing(), "X-Request-Id": "x" * 500})
    error = assert_envelope(response, 401)
    assert error["request_id"] != "x" * 500


def test_unknown_path_and_method_use_the_envelope(stack: Stack) -> None:
    response = stack.client.get("/no-such-route", headers={"X-Request-Id": "r-404"})
    assert assert_envelope(response, 404)["request_id"] == "r-404"
    response = stack.client.delete("/media-v2/assets", headers={"X-Request-Id": "r-405"})
    assert assert_envelope(response, 405)["request_id"] == "r-405"


def test_auth_is_checked_before_request_validation(stack: Stack) -> None:
    """Without a valid token, malformed paths, queries and bodies still answer 401 only."""
    probes = [
        ("POST", f"/canvas/{CANVAS}/artifacts/audit", {}),                  # rev missing
        ("POST", "/canvas/bad..id/artifacts/preview?rev=-1", {"content": b"x"}),
        ("GET", f"/canvas/{CANVAS}/artifacts?limit=0&kind=bogus", {}),
        ("GET", "/media-v2/assets/.hidden", {}),
        ("POST", "/media-v2/assets", {"content": b"{not json",
                                      "headers": {"Content-Type": "application/json"}}),
        ("POST", "/media-v2/assets", {"content": b"text",
                                      "headers": {"Content-Type": "text/plain"}}),
    ]
    for method, path, extra in probes:
        headers = {**routing(), **extra.pop("headers", {}), "X-Request-Id": "r-order"}
        response = stack.client.request(method, path, headers=headers, **extra)
        assert assert_envelope(response, 401)["request_id"] == "r-order", (method, path)


def test_public_endpoints_need_no_auth(stack: Stack) -> None:
    for path in ("/healthz", "/openapi.json"):
        response = stack.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-request-id"]


def test_openapi_lists_both_route_families(stack: Stack) -> None:
    paths = stack.client.get("/openapi.json").json()["paths"]
    assert "/canvas/{canvas_id}/artifacts" in paths
    assert "/media-v2/assets" in paths
