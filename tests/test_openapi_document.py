"""The published OpenAPI document says what a client must send and what it gets back.

Client generators and Swagger UI only know what the document declares: the
bearer token, the routing headers, which bodies are required and in which
media types, and which responses are bytes. Each test here is one promise of
the document that a generated client depends on (the generated client itself
is exercised in test_generated_client.py), plus /docs working offline.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from conftest import Stack

AUTHENTICATED_PREFIXES = ("/canvas/", "/media-v2/")
OPERATION_IDS = {
    ("post", "/canvas/{canvas_id}/artifacts/preview"): "create_preview",
    ("post", "/canvas/{canvas_id}/artifacts/replay"): "create_replay",
    ("post", "/canvas/{canvas_id}/artifacts/audit"): "create_audit",
    ("get", "/canvas/{canvas_id}/artifacts"): "list_artifacts",
    ("get", "/canvas/{canvas_id}/artifacts/latest"): "get_latest_artifact",
    ("get", "/canvas/{canvas_id}/artifacts/{artifact_id}"): "get_artifact",
    ("get", "/canvas/{canvas_id}/artifacts/{artifact_id}/content"): "get_artifact_content",
    ("get", "/canvas/{canvas_id}/artifacts/{artifact_id}/lineage"): "get_artifact_lineage",
    ("post", "/media-v2/assets"): "create_media_asset",
    ("get", "/media-v2/assets"): "list_media_assets",
    ("get", "/media-v2/assets/{asset_id}"): "get_media_asset",
    ("post", "/media-v2/assets/{asset_id}/artifacts"): "register_media_artifact",
    ("get", "/media-v2/artifacts/{artifact_id}"): "get_media_artifact",
}
REQUIRED_HEADERS = {"X-Tenant-Id", "X-Env", "X-Project-Id"}
OPTIONAL_HEADERS = {"X-Workspace-Id", "X-Surface-Id", "X-App-Id", "X-Request-Id",
                    "X-Correlation-Id"}


@pytest.fixture
def document(local: Stack) -> dict[str, Any]:
    response = local.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def _authenticated(document: dict[str, Any]):
    for method, path, operation in _operations(document):
        if path.startswith(AUTHENTICATED_PREFIXES):
            yield method, path, operation


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves_to_a_component(document: dict[str, Any]) -> None:
    """No `#/$defs/...` left from inlined pydantic schemas (the generator skipped those
    operations); every body names a component."""
    schemas = document["components"]["schemas"]
    refs = _refs(document["paths"]) + _refs(schemas)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for method, path, operation in _operations(document):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            schema = media["schema"]
            assert "$ref" in schema or schema.get("format") == "binary", (method, path, schema)


def test_operation_ids_are_the_readable_names(document: dict[str, Any]) -> None:
    """Generated clients name their functions after these: unique, snake_case."""
    found = {(method, path): operation["operationId"]
             for method, path, operation in _operations(document)}
    assert {key: found.get(key) for key in OPERATION_IDS} == OPERATION_IDS
    assert len(set(found.values())) == len(found)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in found.values()), found


def test_authenticated_operations_declare_bearer_and_routing_headers(
        document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearer"]["description"]}
    authenticated = list(_authenticated(document))
    assert len(authenticated) >= len(OPERATION_IDS)
    for method, path, operation in authenticated:
        assert operation["security"] == [{"bearer": []}], (method, path)
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert {n for n, p in headers.items() if p["required"]} == REQUIRED_HEADERS, path
        optional = OPTIONAL_HEADERS | ({"Idempotency-Key"} if method == "post" else set())
        assert optional <= {n for n, p in headers.items() if not p["required"]}, (method, path)
        assert ("Idempotency-Key" in headers) == (method == "post"), (method, path)
        assert headers["X-Env"]["schema"] == {"$ref": "#/components/schemas/Env"}
        names = [(p["in"], p["name"]) for p in operation["parameters"]]
        assert len(names) == len(set(names)), (method, path, names)


def test_bodies_are_required_where_the_route_needs_one(document: dict[str, Any]) -> None:
    posts = {(method, path): operation for method, path, operation in _operations(document)
             if method == "post"}
    # completing an upload session sends no body: the parts are the payload
    assert [key for key, op in posts.items() if "requestBody" not in op] == [
        ("post", "/canvas/{canvas_id}/artifacts/preview/uploads/{upload_id}/complete")]
    bodies = {key: op["requestBody"] for key, op in posts.items() if "requestBody" in op}
    required = {key: body["required"] for key, body in bodies.items()}
    assert required == {key: not key[1].endswith(("/audit", "/signed-url", "/events/tickets"))
                        for key in bodies}
    preview = bodies["post", "/canvas/{canvas_id}/artifacts/preview"]["content"]
    # the three kinds of body a generator can send: a file, a multipart form, JSON
    assert list(preview) == ["application/octet-stream", "multipart/form-data",
                             "application/json"]
    assert preview["application/octet-stream"]["schema"] == {"type": "string",
                                                             "format": "binary"}


def test_body_routes_declare_408_and_the_other_body_errors(document: dict[str, Any]) -> None:
    for method, path, operation in _authenticated(document):
        declared = set(operation["responses"])
        assert {"400", "401", "403", "422", "503"} <= declared, (method, path)
        if method == "post":
            assert {"408", "409", "413", "415"} <= declared, (method, path)
            error = operation["responses"]["408"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorEnvelope"}


def test_content_is_declared_as_bytes_first(document: dict[str, Any]) -> None:
    """A generator reads the first media type it knows: bytes, not text or JSON."""
    responses = document["paths"]["/canvas/{canvas_id}/artifacts/{artifact_id}/content"][
        "get"]["responses"]
    for status in ("200", "206"):
        content = responses[status]["content"]
        assert next(iter(content)) == "application/octet-stream", status
        assert content["application/octet-stream"]["schema"]["format"] == "binary"
        assert {"image/png", "image/svg+xml", "application/json"} <= set(content)


def test_lineage_and_lists_are_typed(document: dict[str, Any]) -> None:
    def ok_schema(path: str) -> dict[str, Any]:
        return document["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"]["schema"]

    assert ok_schema("/canvas/{canvas_id}/artifacts/{artifact_id}/lineage") == {
        "$ref": "#/components/schemas/Lineage"}
    assert ok_schema("/canvas/{canvas_id}/artifacts") == {
        "$ref": "#/components/schemas/ArtifactList"}
    assert ok_schema("/media-v2/assets") == {"$ref": "#/components/schemas/AssetList"}
    lineage = document["components"]["schemas"]["Lineage"]["properties"]
    assert lineage["documents"]["items"] == {"$ref": "#/components/schemas/NexusDocument"}
    assert lineage["events"]["items"] == {"$ref": "#/components/schemas/DatasetEvent"}


def test_declared_headers_do_not_change_the_order_of_checks(local: Stack) -> None:
    """Documenting the headers must not make FastAPI validate them: no token is still
    401 (not a 422 for a missing X-Tenant-Id), a bad routing header is still 400."""
    base = "/canvas/c_doc/artifacts"
    assert local.client.get(base).status_code == 401
    token = {"Authorization": local.headers()["Authorization"]}
    missing = local.client.get(base, headers=token)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "request.bad_headers"
    bad_env = local.client.get(base, headers={**local.headers(), "X-Env": "nope"})
    assert bad_env.status_code == 400


class _AssetLinks(HTMLParser):
    """Every URL a page makes the browser load: scripts, styles, icons, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(local: Stack, page: str) -> None:
    response = local.client.get(page)
    assert response.status_code == 200
    html = response.text
    links = _AssetLinks()
    links.feed(html)
    assert links.urls
    # inline script strings count too: Swagger UI gets the document URL from one
    inline_urls = re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
    for url in links.urls + inline_urls:
        assert url.startswith("/") and not url.startswith("//"), url
        served = local.client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 100, url
    assert "http://" not in html and "https://" not in html
    scripts = [u for u in links.urls if u.endswith(".js")]
    assert scripts and all(u.startswith("/docs/assets/") for u in scripts)


def test_docs_assets_are_served_with_their_types(local: Stack) -> None:
    js = local.client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert b"SwaggerUIBundle" in js.content
    css = local.client.get("/docs/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    assert local.client.get("/docs/assets/no-such-file.js").status_code == 404
