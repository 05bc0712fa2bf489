"""The lean path answers every request exactly as FastAPI's full path does.

One stack, two apps: the normal one (plainly valid requests of the hot
routes take the lean path) and one with LEAN_ROUTES=false (every request is
solved by FastAPI). Hypothesis sends both the same generated ids, revisions,
variant queries, duplicated parameters, routing headers and tokens, and the
answers must match: status, error code, content type, ETag and body.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import Stack
from engines.app import create_app
from engines.auth.tokens import reader
from engines.canvas_artifacts.router import hot, router
from engines.canvas_artifacts.tests.helpers import created, new_tenant, url
from engines.http.errors import Forbidden
from engines.http.lean import _LEAN, _compile


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


PNG = _png()
_IDS = st.sampled_from(["c_lean", "..bad", "a" * 128, "a" * 129, "c.d", "c-1.", "c%2Fx",
                        "%E2%82%AC", "0", "c__x", "c.", ".c"])
_NUMBERS = st.sampled_from(["0", "1", "7", "007", "+7", "-1", "64", "256", "1e3", "",
                            str(2**53), str(2**53 + 1), "9" * 30, "1073741824",
                            "1073741825", " 7", "100", "101"])
_WORDS = st.sampled_from(["webp", "png", "jpeg", "auto", "gif", "WEBP", "inline",
                          "attachment", "x%20y", "a+b"])
_NAMES = st.sampled_from(["rev", "w", "h", "q", "format", "disposition", "from_ms",
                          "to_ms", "kind", "W", "rev[]"])
_QUERY = st.lists(st.tuples(_NAMES, st.one_of(_NUMBERS, _WORDS)), max_size=4).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))
_PLAIN_QUERY = st.sampled_from(["", "rev=1", "w=64", "w=64&format=webp", "h=30&q=75",
                                "format=png", "disposition=inline", "rev=0&rev=1"])


def _mostly(plain: str, *odd: str) -> st.SearchStrategy[str]:
    """`plain` about three times in four, so that most requests are plainly valid."""
    return st.sampled_from([plain] * (3 * len(odd)) + list(odd))


_TOKENS = _mostly("member", "viewer", "other", "garbage", "none")
_TENANT_HEADER = _mostly("same", "other", "missing", "malformed")
_ENV = _mostly("dev", "missing", "nope")


@pytest.fixture
def pair(stack: Stack) -> dict[str, Any]:
    """The stack's app and a LEAN_ROUTES=false twin on the same runtime, plus a preview."""
    full = create_app(stack.settings.model_copy(update={"lean_routes": False}),
                      runtime=stack.runtime)
    tenant, other = new_tenant(), new_tenant()
    headers = {**stack.headers(tenant), "Content-Type": "image/png"}
    record = created(stack.client.post(url("c_lean", "/preview?rev=1"), content=PNG,
                                       headers=headers))
    with TestClient(full, raise_server_exceptions=False) as client:
        yield {"stack": stack, "full": client, "tenant": tenant, "other": other,
               "record": record}


def _headers(pair: dict[str, Any], token: str, tenant_header: str, env: str) -> dict[str, str]:
    stack, tenant, other = pair["stack"], pair["tenant"], pair["other"]
    headers = {"X-Project-Id": "p_main", "Content-Type": "image/png"}
    tokens = {"member": stack.token(tenant), "viewer": stack.token(tenant, role="viewer"),
              "other": stack.token(other), "garbage": "not.a.token"}
    if token in tokens:
        headers["Authorization"] = f"Bearer {tokens[token]}"
    tenants = {"same": tenant, "other": other, "malformed": "Tenant!"}
    if tenant_header in tenants:
        headers["X-Tenant-Id"] = tenants[tenant_header]
    if env != "missing":
        headers["X-Env"] = env
    return headers


def _answer(response: Any, *, create: bool) -> dict[str, Any]:
    """What must match: a create's record has fresh ids, so only its status then."""
    answer: dict[str, Any] = {"status": response.status_code,
                              "type": response.headers.get("content-type"),
                              "etag": response.headers.get("etag")}
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body["error"].pop("request_id", None)
        answer["body"] = None if create and response.status_code == 201 else body
    else:
        answer["body"] = response.content
    return answer


@example(route="content", canvas="c_lean", artifact="real", query="w=64",
         token="member", tenant_header="same", env="dev")
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["record", "content", "preview"]),
       canvas=st.one_of(*[st.just("c_lean")] * 3, _IDS),
       artifact=st.one_of(*[st.just("real")] * 3, _IDS),
       query=st.one_of(_PLAIN_QUERY, _PLAIN_QUERY, _QUERY), token=_TOKENS,
       tenant_header=_TENANT_HEADER, env=_ENV)
def test_lean_and_full_paths_answer_alike(pair, route, canvas, artifact, query, token,
                                          tenant_header, env) -> None:
    artifact = pair["record"]["id"] if artifact == "real" else artifact
    suffix = {"record": f"/{artifact}", "content": f"/{artifact}/content",
              "preview": "/preview"}[route]
    path = url(quote(canvas, safe="%"), suffix) + (f"?{query}" if query else "")
    headers = _headers(pair, token, tenant_header, env)
    answers = []
    for client in (pair["stack"].client, pair["full"]):
        if route == "preview":
            response = client.post(path, content=PNG, headers=headers)
        else:
            response = client.get(path, headers=headers)
        answers.append(_answer(response, create=route == "preview"))
    assert answers[0] == answers[1], path


def test_the_hot_routes_are_compiled_for_the_lean_path() -> None:
    compiled = {route.name for route in [*hot.routes, *router.routes]
                if route.endpoint in _LEAN and _compile(route.dependant) is not None}
    assert compiled == {"get_artifact", "get_artifact_content", "create_preview"}


def test_dependency_overrides_hold_on_plain_requests(stack: Stack) -> None:
    """A plainly valid request still goes through an overridden dependency."""
    tenant = new_tenant()
    record = created(stack.client.post(url("c_lean", "/preview?rev=1"), content=PNG,
                                       headers={**stack.headers(tenant),
                                                "Content-Type": "image/png"}))

    async def refuse() -> None:
        raise Forbidden("overridden", code="test.overridden")

    app = stack.client.app
    app.dependency_overrides[reader] = refuse
    try:
        for suffix in ("", "/content", "/content?w=64"):
            response = stack.client.get(url("c_lean", f"/{record['id']}{suffix}"),
                                        headers=stack.headers(tenant))
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "test.overridden"
    finally:
        app.dependency_overrides.clear()
