"""Hostile inputs get the same 4xx on both stacks, never a 503 from the database.

SQLite stores whatever it is given; PostgreSQL refuses a NUL in text or JSONB
and a value longer than its column. An input that slipped past validation
therefore answered 201 on one stack and 503 (which clients retry forever) on
the other. Each case below runs on both stacks and must answer the one 4xx
status it names, so the edge, not the database, decides.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import PNG, Stack, new_canvas
from engines.auth.tokens import issue_token

CANVAS = "/canvas/{canvas}/artifacts"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _as(stack: Stack, sub: str) -> dict[str, str]:
    """The usual member headers with a token for the subject `sub`."""
    token = issue_token(stack.settings, sub=sub, tenants=["t_acme"], role="member")
    return {**stack.headers(), "Authorization": f"Bearer {token}"}


def _query(params: dict[str, str]) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.get(CANVAS.format(canvas=new_canvas()), params=params,
                                  headers=s.headers())


def _list(cursor: str) -> Callable[[Stack], httpx.Response]:
    return _query({"cursor": cursor})


def _media_list(cursor: str) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.get("/media-v2/assets", params={"cursor": cursor},
                                  headers=s.headers())


def _preview(headers: dict[str, str] | None = None, **extra: str
             ) -> Callable[[Stack], httpx.Response]:
    def call(s: Stack) -> httpx.Response:
        sent = {**s.headers(), **(headers or {}), "Content-Type": "image/png"}
        sent.update({k.replace("_", "-"): v for k, v in extra.items()})
        return s.client.post(CANVAS.format(canvas=new_canvas()) + "/preview?rev=1",
                             content=PNG, headers=sent)
    return call


def _render_ref(body: dict[str, Any]) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.post(CANVAS.format(canvas=new_canvas()) + "/preview?rev=1",
                                   json=body, headers=s.headers())


def _replay(body: dict[str, Any]) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.post(CANVAS.format(canvas=new_canvas()) + "/replay", json=body,
                                   headers=s.headers())


def _asset(body: dict[str, Any]) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.post("/media-v2/assets", json=body, headers=s.headers())


def _derived(body: dict[str, Any]) -> Callable[[Stack], httpx.Response]:
    def call(s: Stack) -> httpx.Response:
        asset = s.client.post("/media-v2/assets", headers=s.headers(),
                              json={"source_uri": "https://cdn.example.com/a.mp4"})
        assert asset.status_code == 201, asset.text
        return s.client.post(f"/media-v2/assets/{asset.json()['id']}/artifacts",
                             json={"kind": "thumbnail", "uri": "https://cdn.example.com/t.png",
                                   **body}, headers=s.headers())
    return call


def _as_subject(sub: str) -> Callable[[Stack], httpx.Response]:
    """A write as `sub`: its subject lands in three columns (actor, user id, lineage)."""
    return lambda s: s.client.post(CANVAS.format(canvas=new_canvas()) + "/preview?rev=1",
                                   content=PNG,
                                   headers={**_as(s, sub), "Content-Type": "image/png"})


def _read_as_subject(sub: str) -> Callable[[Stack], httpx.Response]:
    return lambda s: s.client.get("/media-v2/assets", headers=_as(s, sub))


def _upload(filename: str, content_type: str = "image/png") -> Callable[[Stack], httpx.Response]:
    """A multipart upload built by hand: httpx would percent-encode a NUL in the filename."""
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + filename.encode() + b"\"\r\nContent-Type: " + content_type.encode()
            + b"\r\n\r\n" + PNG + b"\r\n--b0undary--\r\n")
    return lambda s: s.client.post(
        "/media-v2/assets", content=body,
        headers={**s.headers(), "Content-Type": "multipart/form-data; boundary=b0undary"})


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Stack], httpx.Response]
    status: int


NUL = "\x00"
CASES = [
    # cursors: opaque to clients, so anything not minted by us is 422
    Case("cursor decoding to a NUL", _list("AA"), 422),
    Case("cursor decoding to control characters", _list(_b64("art_\x01\x02")), 422),
    Case("cursor decoding to non-id text", _list(_b64("hello world")), 422),
    Case("cursor decoding to an over-long id", _list(_b64("a" * 129)), 422),
    Case("cursor over 256 characters", _list("A" * 300), 422),
    Case("cursor with a raw NUL", _list(NUL), 422),
    Case("kind with a NUL", _query({"kind": "preview" + NUL}), 422),
    Case("rev past BIGINT", _query({"rev": str(2**63)}), 422),
    Case("limit with a NUL", _query({"limit": "5" + NUL}), 422),
    Case("media_v2 cursor with a NUL", _media_list("ma_" + NUL), 422),
    Case("media_v2 cursor over-long", _media_list("m" * 300), 422),
    # token subjects: they become actor_id / user_id columns
    Case("sub of 300 characters, read", _read_as_subject("u" * 300), 401),
    Case("sub of 300 characters, write", _as_subject("u" * 300), 401),
    Case("sub of 129 characters, write", _as_subject("u" * 129), 401),
    Case("sub with a NUL", _as_subject("u_ana" + NUL), 401),
    Case("sub with a newline", _as_subject("u_ana\nroot"), 401),
    Case("sub with a DEL", _as_subject("u_ana\x7f"), 401),
    Case("sub with a lone surrogate", _as_subject("u_\ud800"), 401),
    Case("sub of 128 characters is fine", _as_subject("u" * 128), 201),
    # routing and idempotency headers
    Case("X-Project-Id over-long", _preview({"X-Project-Id": "p" * 200}), 400),
    Case("X-Project-Id with a control character", _preview({"X-Project-Id": "p\x01"}), 400),
    Case("X-Workspace-Id over-long", _preview(X_Workspace_Id="w" * 200), 400),
    Case("X-App-Id with a space", _preview(X_App_Id="a b"), 400),
    Case("X-Tenant-Id over-long", _preview({"X-Tenant-Id": "t_" + "a" * 80}), 400),
    Case("X-Env unknown", _preview({"X-Env": "qa\x01"}), 400),
    Case("Idempotency-Key with a control character", _preview(Idempotency_Key="k\x01"), 400),
    Case("Idempotency-Key over 255 characters", _preview(Idempotency_Key="k" * 256), 400),
    Case("Idempotency-Key empty", _preview(Idempotency_Key=""), 400),
    # JSON string fields that become columns or JSONB
    Case("render-ref uri with a NUL", _render_ref({"uri": "https://cdn.example.com/a" + NUL}),
         422),
    Case("render-ref uri over 2048", _render_ref({"uri": "https://c.example/" + "a" * 2100}),
         422),
    Case("render-ref mime_type with a NUL",
         _render_ref({"uri": "https://cdn.example.com/a.png", "mime_type": "image/png" + NUL}),
         422),
    Case("asset source_uri with a NUL", _asset({"source_uri": "https://c.example/" + NUL}), 422),
    Case("asset meta value with a NUL",
         _asset({"source_uri": "https://c.example/a", "meta": {"k": "v" + NUL}}), 422),
    Case("asset meta key with a NUL",
         _asset({"source_uri": "https://c.example/a", "meta": {"k" + NUL: 1}}), 422),
    Case("asset nested meta with a NUL",
         _asset({"source_uri": "https://c.example/a", "meta": {"a": [{"b": NUL}]}}), 422),
    Case("asset tag with a NUL", _asset({"source_uri": "https://c.example/a",
                                         "tags": ["ok", NUL]}), 422),
    Case("artifact uri with a NUL", _derived({"uri": "https://c.example/" + NUL}), 422),
    Case("artifact track_label with a NUL", _derived({"track_label": "en" + NUL}), 422),
    Case("artifact track_label over 128", _derived({"track_label": "l" * 129}), 422),
    Case("artifact meta with a NUL", _derived({"meta": {"x": NUL}}), 422),
    Case("artifact start_ms past BIGINT", _derived({"start_ms": 2**63}), 422),
    Case("upload filename with a NUL", _upload("a" + NUL + ".png"), 422),
    # a replay's document lives in the blob, not in a column: stored as given on both
    Case("replay with NULs in its summary and keyframe data", _replay({
        "rev": 1, "summary": {NUL: NUL},
        "keyframes": [{"t_ms": 0, "type": "commit", "data": {"k" + NUL: "v" + NUL}}]}), 201),
    Case("upload content type with a control character", _upload("a.png", "image/png\x01"),
         422),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_answers_the_same_status_on_both_stacks(stack: Stack, case: Case) -> None:
    response = case.call(stack)
    assert response.status_code == case.status, response.text
    if case.status >= 400:
        assert set(response.json()) == {"error"}


def test_lone_surrogates_in_json_are_422_on_both_stacks(stack: Stack) -> None:
    """Not representable in UTF-8, so not storable anywhere: malformed JSON."""
    for body in (b'{"source_uri": "https://c.example/a", "meta": {"k": "\\ud800"}}',
                 b'{"source_uri": "https://c.example/a", "tags": ["\\udfff"]}'):
        response = stack.client.post("/media-v2/assets", content=body,
                                     headers={**stack.headers(),
                                              "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
