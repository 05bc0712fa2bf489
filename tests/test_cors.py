"""CORS_ORIGINS: preflights and CORS headers on every route, lean fast paths included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conftest import PNG, Stack, new_canvas
from engines.config import Settings

ORIGIN = "http://localhost:3000"
WRITE_HEADERS = ("authorization", "x-tenant-id", "x-env", "x-project-id", "x-workspace-id",
                 "x-surface-id", "x-app-id", "x-request-id", "x-correlation-id",
                 "idempotency-key", "content-type", "x-mode", "last-event-id", "range",
                 "if-none-match")


def preflight(stack: Stack, path: str, method: str = "POST", origin: str = ORIGIN,
              headers: tuple[str, ...] = WRITE_HEADERS):
    return stack.client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ", ".join(headers)})


@pytest.fixture
def cors(make_stack) -> Stack:
    return make_stack("local-sqlite", cors_origins=[ORIGIN, "https://app.example.com"])


def test_preflight_allows_the_headers_a_front_end_sends(cors: Stack) -> None:
    canvas = new_canvas()
    for path, method in ((f"/canvas/{canvas}/artifacts/preview?rev=1", "POST"),
                         (f"/canvas/{canvas}/artifacts/art_x/content", "GET"),
                         ("/events/tickets", "POST"), ("/artifacts", "GET"),
                         (f"/canvas/{canvas}/artifacts/art_x", "DELETE")):
        response = preflight(cors, path, method)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == ORIGIN
        allowed = {h.strip().lower()
                   for h in response.headers["access-control-allow-headers"].split(",")}
        assert set(WRITE_HEADERS) <= allowed
        assert method in response.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in response.headers


def test_responses_carry_the_headers_on_lean_and_full_paths_and_errors(cors: Stack) -> None:
    canvas = new_canvas()
    origin = {"Origin": ORIGIN}
    headers = {**cors.headers(), **origin}
    create = cors.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                              headers={**headers, "Content-Type": "image/png"})  # lean create
    assert create.status_code == 201
    record = create.json()
    content = cors.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/content",
                              headers=headers)  # lean content GET
    full = cors.client.get(f"/canvas/{canvas}/artifacts?limit=5", headers=headers)
    denied = cors.client.get(f"/canvas/{canvas}/artifacts/{record['id']}", headers=origin)
    for response in (create, content, full, denied):
        assert response.headers["access-control-allow-origin"] == ORIGIN, response.url
        exposed = {h.strip().lower()
                   for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"etag", "x-request-id", "x-correlation-id", "content-range"} <= exposed
    assert content.status_code == 200 and content.headers["etag"]
    assert denied.status_code == 401


def test_other_origins_and_the_default_get_no_cors(cors: Stack, make_stack) -> None:
    evil = preflight(cors, "/artifacts", "GET", origin="http://evil.example")
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers
    plain = cors.client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in plain.headers

    default = make_stack("local-sqlite")
    assert preflight(default, "/artifacts", "GET").status_code == 405
    response = default.client.get("/healthz", headers={"Origin": ORIGIN})
    assert not [h for h in response.headers if h.startswith("access-control-")]


def test_cors_origins_are_exact_origins() -> None:
    assert Settings(cors_origins="http://localhost:3000/, https://a.example.com:8443 ,"
                    ).cors_origins == ["http://localhost:3000", "https://a.example.com:8443"]
    assert Settings(cors_origins='http://[::1]:3000').cors_origins == ["http://[::1]:3000"]
    assert Settings().cors_origins == []
    for bad in ("*", "localhost:3000", "https://a.example.com/app", "ftp://a.example.com",
                "https://*.example.com"):
        with pytest.raises(ValidationError, match="CORS_ORIGINS"):
            Settings(cors_origins=bad)
