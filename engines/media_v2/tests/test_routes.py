"""Contract tests for the media_v2 routes, on both stacks (local + SQLite, S3 + PostgreSQL).

The shapes are the engines codebase's (`MediaAsset`, `DerivedArtifact`),
now authenticated and scoped to (tenant_id, env): another scope's id answers
exactly like an id that does not exist.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from conftest import HTML, JPEG, PNG, SVG, Stack, new_canvas
from engines.common.ids import new_id
from engines.media_v2.upload_type import GENERIC

ASSET_FIELDS = {"id", "tenant_id", "env", "user_id", "kind", "source_uri", "size_bytes", "tags",
                "source_ref", "created_at", "meta"}
ARTIFACT_FIELDS = {"id", "parent_asset_id", "tenant_id", "env", "kind", "uri", "start_ms",
                   "end_ms", "track_label", "created_at", "meta"}


class Api:
    """A stack seen by two fresh tenants of this test alone.

    The s3-postgres stack shares one database across the session, so tests
    that count what a scope holds must not share a tenant with other tests.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = stack.client
        self.settings = stack.settings
        self.runtime = stack.runtime
        self.tenant = f"t_a{uuid.uuid4().hex[:10]}"
        self.other = f"t_b{uuid.uuid4().hex[:10]}"

    def headers(self, tenant: str | None = None, env: str = "dev", **extra: str) -> dict[str, str]:
        return self.stack.headers(tenant or self.tenant, env, **extra)

    def prefix(self, env: str = "dev") -> str:
        return f"tenants/{self.tenant}/{env}/"


@pytest.fixture
def api(stack: Stack) -> Api:
    return Api(stack)


def upload(api: Api, filename: str, data: bytes, content_type: str = "image/png",
           **headers: str):
    return api.client.post("/media-v2/assets", headers=api.headers(**headers),
                           files={"file": (filename, data, content_type)})


def register(api: Api, body: dict[str, Any], tenant: str | None = None, env: str = "dev"):
    return api.client.post("/media-v2/assets", headers=api.headers(tenant, env), json=body)


def new_asset(api: Api, tenant: str | None = None, env: str = "dev") -> dict[str, Any]:
    response = register(api, {"source_uri": "https://cdn.example.com/clip.mp4", "kind": "video"},
                        tenant, env)
    assert response.status_code == 201, response.text
    return response.json()


def new_artifact(api: Api, asset_id: str, **fields: Any) -> dict[str, Any]:
    body = {"kind": "thumbnail", "uri": "https://cdn.example.com/thumb.jpg", **fields}
    response = api.client.post(f"/media-v2/assets/{asset_id}/artifacts",
                               headers=api.headers(), json=body)
    assert response.status_code == 201, response.text
    return response.json()


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def stored_key(api: Api, uri: str) -> str:
    key = api.runtime.store.key_for(uri)
    assert key is not None, uri
    return key


def blobs_under(api: Api, prefix: str) -> list[str]:
    return [info.key for info in api.runtime.store.iter_blobs(prefix)]


# ---- uploads -------------------------------------------------------------------


def test_upload_is_stored_under_the_media_key(api: Api) -> None:
    response = upload(api, "photo.png", PNG)
    assert response.status_code == 201, response.text
    asset = response.json()
    assert set(asset) == ASSET_FIELDS
    assert asset["id"].startswith("ma_")
    assert (asset["tenant_id"], asset["env"], asset["user_id"]) == (api.tenant, "dev", "u_ana")
    assert asset["kind"] == "image"
    assert asset["size_bytes"] == len(PNG)
    assert asset["meta"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert asset["meta"]["content_type"] == "image/png"

    key = stored_key(api, asset["source_uri"])
    assert key == f"{api.prefix()}media_v2/{asset['id']}/photo.png"
    scheme = "s3://" if api.settings.raw_bucket else "local:tenants/"
    assert asset["source_uri"].startswith(scheme)
    assert api.runtime.store.read_all(key) == PNG

    got = api.client.get(f"/media-v2/assets/{asset['id']}", headers=api.headers())
    assert got.status_code == 200
    assert got.json() == {"asset": asset, "artifacts": []}


MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64
MP3 = b"ID3\x04\x00" + b"\x00" * 64


def test_upload_kind_follows_the_checked_content_type(api: Api) -> None:
    for data, content_type, kind in [(MP4, "video/mp4", "video"), (MP3, "audio/mpeg", "audio"),
                                     (JPEG, "image/jpeg", "image"),
                                     (b"%PDF-1.7\n", "application/pdf", "other")]:
        response = upload(api, "f.bin", data, content_type)
        assert response.status_code == 201, response.text
        assert response.json()["kind"] == kind, content_type


def _stored_type(api: Api, asset: dict[str, Any]) -> str | None:
    """The type the store itself would serve the object with (S3), else None."""
    if not api.settings.raw_bucket:
        return None
    head = api.runtime.store.client.head_object(  # type: ignore[attr-defined]
        Bucket=api.settings.raw_bucket, Key=stored_key(api, asset["source_uri"]))
    return str(head["ContentType"])


def test_upload_type_comes_from_the_bytes(api: Api) -> None:
    """A declared type is a claim the bytes must back; the stored type is the bytes'."""
    for declared, data in [("image/png", HTML), ("image/png", JPEG), ("image/svg+xml", PNG),
                           ("text/html", PNG), ("video/mp4", HTML), ("audio/mpeg", PNG),
                           ("video/webm", b"\x00" * 64), ("image/gif", b"GIF00a"),
                           ("text/html", b"\x00\x01binary")]:
        response = upload(api, "f.bin", data, declared)
        assert error_of(response, 415)["code"] == "request.content_mismatch", declared
    assert blobs_under(api, api.prefix()) == []

    for declared, data, stored in [("application/pdf", HTML, "text/html"),
                                   ("text/plain", SVG, "image/svg+xml"),
                                   ("application/octet-stream", PNG, "image/png"),
                                   ("image/svg+xml", SVG, "image/svg+xml"),
                                   ("image/gif", b"GIF89a" + PNG, "image/gif"),
                                   ("application/javascript", b"alert(1)", GENERIC)]:
        asset = upload(api, "f.bin", data, declared).json()
        assert asset["meta"]["content_type"] == stored, declared
        assert asset["kind"] == ("image" if stored.startswith("image/") else "other")
        assert _stored_type(api, asset) in (None, stored)


def test_hostile_filenames_are_made_safe(api: Api) -> None:
    names = ["../../etc/passwd", "..\\..\\windows\\win.ini", "a/b/../../../c.txt", "...",
             "..", "x y;rm -rf $(id).png", "%2e%2e%2fsecret", "\u00fcber/../\u2603.png",
             ".hidden", "a" * 400 + ".png"]
    for name in names:
        response = upload(api, name, b"payload", "application/octet-stream")
        assert response.status_code == 201, (name, response.text)
        asset = response.json()
        key = stored_key(api, asset["source_uri"])
        prefix = f"{api.prefix()}media_v2/{asset['id']}/"
        assert key.startswith(prefix), (name, key)
        leaf = key[len(prefix):]
        assert leaf and "/" not in leaf and "\\" not in leaf and ".." not in leaf, (name, leaf)
        assert not leaf.startswith("."), (name, leaf)
        assert len(leaf) <= 128
        assert api.runtime.store.read_all(key) == b"payload"
        assert asset["meta"]["filename"] == name     # the client's name is kept, as data only
    assert stored_key(api, upload(api, "../../etc/passwd", b"p", "text/plain")
                      .json()["source_uri"]).endswith("/passwd")
    if not api.settings.raw_bucket:
        root = api.settings.media_local_root.resolve()
        written = [p for p in root.rglob("*") if p.is_file()]
        assert written and all(p.resolve().is_relative_to(root / api.prefix() / "media_v2")
                               for p in written)


def test_upload_needs_a_file_field(api: Api) -> None:
    response = api.client.post("/media-v2/assets", headers=api.headers(),
                               data={"note": "no file here"},
                               files={"other": ("a.png", PNG, "image/png")})
    assert error_of(response, 422)["code"] == "media_v2.missing_file"
    assert blobs_under(api, api.prefix()) == []


@pytest.mark.parametrize("backend", ["local-sqlite", "s3-postgres"])
def test_upload_over_the_limit_is_413_and_keeps_nothing(make_stack, backend: str) -> None:
    api = Api(make_stack(backend, max_preview_bytes=4096))
    response = upload(api, "big.png", PNG + b"\x00" * 8192)
    error_of(response, 413)
    assert blobs_under(api, api.prefix()) == []
    listed = api.client.get("/media-v2/assets", headers=api.headers()).json()
    assert listed["items"] == []


# ---- JSON registration -------------------------------------------------------------


def test_register_https_source(api: Api) -> None:
    body = {"source_uri": "https://cdn.example.com/v/clip.mp4?sig=abc", "kind": "video",
            "tags": ["launch", "hero"], "meta": {"duration_ms": 1200, "nested": {"a": [1, 2]}}}
    response = register(api, body)
    assert response.status_code == 201, response.text
    asset = response.json()
    assert set(asset) == ASSET_FIELDS
    for field in ("source_uri", "kind", "tags", "meta"):
        assert asset[field] == body[field], field
    assert asset["size_bytes"] is None
    got = api.client.get(f"/media-v2/assets/{asset['id']}", headers=api.headers()).json()
    assert got["asset"] == asset


def test_register_defaults(api: Api) -> None:
    asset = register(api, {"source_uri": "https://cdn.example.com/x"}).json()
    assert (asset["kind"], asset["tags"], asset["meta"]) == ("other", [], {})


def test_register_s3_only_inside_own_prefix(api: Api) -> None:
    bucket = api.settings.raw_bucket or "canvas-raw"
    refused = [
        f"s3://{bucket}/tenants/{api.other}/dev/media_v2/x/a.png",     # another tenant
        f"s3://{bucket}/{api.prefix('prod')}media_v2/x/a.png",         # another env
        f"s3://{bucket}/{api.prefix()}../../{api.other}/dev/a.png",    # climbing out
        f"s3://{bucket}/tenants/{api.tenant}x/dev/a.png",              # prefix look-alike
        f"s3://{bucket}/other/a.png",
        f"s3://someone-elses-bucket/{api.prefix()}a.png",
        f"s3:///{api.prefix()}a.png",
        "file:///etc/passwd",
        "http://cdn.example.com/a.png",
        "ftp://cdn.example.com/a.png",
        "https:///no-host",
        "/etc/passwd",
    ]
    for uri in refused:
        error = error_of(register(api, {"source_uri": uri}), 422)
        assert error["code"] == "request.uri_out_of_scope", uri
    own = f"s3://{bucket}/{api.prefix()}media_v2/x/a.png"
    response = register(api, {"source_uri": own, "kind": "image"})
    if api.settings.raw_bucket:
        assert response.status_code == 201, response.text
        assert response.json()["source_uri"] == own
    else:  # with no bucket configured every s3:// reference is out of scope
        assert error_of(response, 422)["code"] == "request.uri_out_of_scope"
    listed = api.client.get("/media-v2/assets", headers=api.headers()).json()["items"]
    assert len(listed) == (1 if api.settings.raw_bucket else 0)


def test_register_schema_violations_are_422(api: Api) -> None:
    for body in [{}, {"source_uri": ""}, {"source_uri": "https://a.example/x", "kind": "movie"},
                 {"source_uri": "https://a.example/x", "tags": "not-a-list"},
                 {"source_uri": "https://a.example/x", "meta": []},
                 {"source_uri": "https://a.example/x", "owner": api.other},
                 {"source_uri": "https://a.example/" + "x" * 3000}]:
        error_of(register(api, body), 422)
    for raw in [b"{not json", b"[1, 2]", b'"https://a.example/x"', b"", b"null",
                b"[" * 200 + b"]" * 200]:
        response = api.client.post("/media-v2/assets", content=raw, headers={
            **api.headers(), "Content-Type": "application/json"})
        error_of(response, 422)


def test_values_the_database_cannot_store_are_422(api: Api) -> None:
    """NUL characters and out-of-range integers are the client's error on both stacks.

    PostgreSQL refuses U+0000 in text and JSONB and BIGINT overflows; left to
    the database they surfaced as a 503 "metadata unavailable" (500 on SQLite).
    """
    ok = "https://cdn.example.com/a.png"
    for body in [{"source_uri": "https://cdn.example.com/\u0000a"},
                 {"source_uri": ok, "tags": ["fine", "bad\u0000"]},
                 {"source_uri": ok, "meta": {"k": "v\u0000"}},
                 {"source_uri": ok, "meta": {"deep": [{"k\u0000": 1}]}}]:
        error_of(register(api, body), 422)
    for uri in ["https://cdn.example.com/a\r\nSet-Cookie: x=1", "https://cdn.example.com/\x7f"]:
        assert error_of(register(api, {"source_uri": uri}), 422)["code"] == "request.invalid_uri"

    path = f"/media-v2/assets/{new_asset(api)['id']}/artifacts"
    base = {"kind": "thumbnail", "uri": ok}
    for body in [{**base, "start_ms": 2**63}, {**base, "end_ms": 2**53 + 1},
                 {**base, "track_label": "v\u0000"}, {**base, "meta": {"k": ["\u0000"]}},
                 {**base, "uri": ok + "\u0000"}]:
        error_of(api.client.post(path, headers=api.headers(), json=body), 422)
    edge = api.client.post(path, headers=api.headers(), json={**base, "end_ms": 2**53})
    assert edge.status_code == 201, edge.text

    for part in [b'filename="a\x00b.png"\r\nContent-Type: image/png',
                 b'filename="a.png"\r\nContent-Type: image/png\x00x']:
        raw = (b'--zz\r\nContent-Disposition: form-data; name="file"; ' + part + b"\r\n\r\n"
               + PNG + b"\r\n--zz--\r\n")
        response = api.client.post("/media-v2/assets", content=raw, headers={
            **api.headers(), "Content-Type": "multipart/form-data; boundary=zz"})
        assert error_of(response, 422)["code"] == "media_v2.invalid_upload"
    assert blobs_under(api, api.prefix()) == []
    listed = api.client.get("/media-v2/assets", headers=api.headers()).json()["items"]
    assert len(listed) == 1                          # only the asset made for the artifacts


def test_canvas_metadata_the_database_cannot_store_is_422(api: Api) -> None:
    """The same class of input on the canvas creates, whose metadata step writes media_v2."""
    canvas = new_canvas()
    probes = [
        ("preview?rev=1", {"uri": "https://cdn.example.com/r.png", "mime_type": "image/png\u0000"}),
        ("preview?rev=1", {"uri": "https://cdn.example.com/r.png\r\nLocation: https://evil"}),
        ("replay", {"rev": 2**63, "keyframes": [], "summary": {}}),
        ("replay", {"rev": 1, "rev_from": 2**63, "keyframes": [], "summary": {}}),
    ]
    for path, body in probes:
        response = api.client.post(f"/canvas/{canvas}/artifacts/{path}", headers=api.headers(),
                                   json=body)
        error_of(response, 422)
    listed = api.client.get(f"/canvas/{canvas}/artifacts", headers=api.headers()).json()
    assert listed["items"] == []


def test_unsupported_content_type_is_415(api: Api) -> None:
    for content_type in ["text/plain", "application/xml", "application/x-www-form-urlencoded",
                         "image/png"]:
        response = api.client.post("/media-v2/assets", content=b"source_uri=https://x",
                                   headers={**api.headers(), "Content-Type": content_type})
        assert error_of(response, 415)["code"] == "request.unsupported_media_type", content_type
    no_type = api.client.post("/media-v2/assets", content=b"x", headers=api.headers())
    error_of(no_type, 415)
    assert api.client.get("/media-v2/assets", headers=api.headers()).json()["items"] == []


# ---- lists and scope ------------------------------------------------------------------


def test_list_shows_only_the_callers_tenant_and_env(api: Api) -> None:
    scopes = [(api.tenant, "dev"), (api.tenant, "prod"), (api.other, "dev"),
              (api.other, "staging")]
    mine = {scope: {new_asset(api, *scope)["id"] for _ in range(2)} for scope in scopes}
    mine[(api.tenant, "dev")].add(upload(api, "p.png", PNG).json()["id"])
    for (tenant, env), ids in mine.items():
        response = api.client.get("/media-v2/assets", headers=api.headers(tenant, env))
        assert response.status_code == 200
        items = response.json()["items"]
        assert {item["id"] for item in items} == ids, (tenant, env)
        assert all((i["tenant_id"], i["env"]) == (tenant, env) for i in items)
        assert response.json()["next_cursor"] is None


def test_list_is_newest_first_and_pages(api: Api) -> None:
    created = [new_asset(api)["id"] for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/media-v2/assets", headers=api.headers(), params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "../x"}):
        error_of(api.client.get("/media-v2/assets", headers=api.headers(), params=bad), 422)


# ---- derived artifacts -------------------------------------------------------------------


def test_register_and_read_derived_artifacts(api: Api) -> None:
    asset = new_asset(api)
    first = new_artifact(api, asset["id"], kind="proxy", start_ms=0, end_ms=1500,
                         track_label="v1", meta={"codec": "h264"})
    second = new_artifact(api, asset["id"])
    assert set(first) == ARTIFACT_FIELDS
    assert first["id"].startswith("mda_")
    assert (first["parent_asset_id"], first["tenant_id"], first["env"]) == \
        (asset["id"], api.tenant, "dev")
    assert (first["kind"], first["start_ms"], first["end_ms"], first["track_label"],
            first["meta"]) == ("proxy", 0, 1500, "v1", {"codec": "h264"})
    assert (second["start_ms"], second["end_ms"], second["track_label"]) == (None, None, None)

    detail = api.client.get(f"/media-v2/assets/{asset['id']}", headers=api.headers())
    assert detail.status_code == 200
    body = detail.json()
    assert set(body) == {"asset", "artifacts"}
    assert body["asset"] == asset
    assert sorted(body["artifacts"], key=lambda a: a["id"]) == [first, second]
    for artifact in (first, second):
        got = api.client.get(f"/media-v2/artifacts/{artifact['id']}", headers=api.headers())
        assert got.status_code == 200
        assert got.json() == artifact


def test_artifact_uri_in_own_prefix(api: Api) -> None:
    asset = upload(api, "clip.png", PNG).json()
    uri = f"s3://{api.settings.raw_bucket or 'raw'}/{api.prefix()}media_v2/{asset['id']}/t.jpg"
    if api.settings.raw_bucket:
        assert new_artifact(api, asset["id"], uri=uri)["uri"] == uri
    else:  # with no bucket configured every s3:// reference is out of scope
        response = api.client.post(f"/media-v2/assets/{asset['id']}/artifacts",
                                   headers=api.headers(), json={"kind": "thumbnail", "uri": uri})
        assert error_of(response, 422)["code"] == "request.uri_out_of_scope"


def test_artifact_validation_is_422(api: Api) -> None:
    asset_id = new_asset(api)["id"]
    path = f"/media-v2/assets/{asset_id}/artifacts"
    base = {"kind": "thumbnail", "uri": "https://cdn.example.com/t.jpg"}
    for body in [{**base, "kind": "hologram"}, {"kind": "thumbnail"}, {**base, "start_ms": -1},
                 {**base, "start_ms": 900, "end_ms": 100}, {**base, "parent_asset_id": "x"},
                 {**base, "tenant_id": api.other}, {**base, "uri": "file:///etc/shadow"},
                 {**base, "uri": f"s3://any-bucket/tenants/{api.other}/dev/x"},
                 {**base, "track_label": "x" * 200}]:
        error_of(api.client.post(path, headers=api.headers(), json=body), 422)
    for raw in [b"{", b"[]", b"", b"\xff\xfe"]:
        response = api.client.post(path, content=raw, headers={
            **api.headers(), "Content-Type": "application/json"})
        error_of(response, 422)
    detail = api.client.get(f"/media-v2/assets/{asset_id}", headers=api.headers()).json()
    assert detail["artifacts"] == []


def test_bad_ids_in_the_path_are_rejected(api: Api) -> None:
    for path in ["/media-v2/assets/..%2F..%2Fetc", "/media-v2/assets/.hidden",
                 "/media-v2/artifacts/" + "a" * 200]:
        response = api.client.get(path, headers=api.headers())
        assert response.status_code in (404, 422), path
        error_of(response, response.status_code)


def test_canvas_artifacts_are_visible_as_media_v2_records(api: Api) -> None:
    canvas = new_canvas()
    record = api.client.post(f"/canvas/{canvas}/artifacts/audit?rev=7",
                             headers=api.headers()).json()
    artifact = api.client.get(f"/media-v2/artifacts/{record['media_artifact_id']}",
                              headers=api.headers())
    assert artifact.status_code == 200, artifact.text
    assert artifact.json()["kind"] == "canvas_audit"
    assert artifact.json()["parent_asset_id"] == record["media_asset_id"]
    detail = api.client.get(f"/media-v2/assets/{record['media_asset_id']}",
                            headers=api.headers()).json()
    assert [a["id"] for a in detail["artifacts"]] == [record["media_artifact_id"]]
    assert detail["asset"]["meta"]["canvas_id"] == canvas
    other = api.client.get(f"/media-v2/artifacts/{record['media_artifact_id']}",
                           headers=api.headers(api.other))
    error_of(other, 404)


# ---- another scope's id is a missing id ----------------------------------------------------


def test_foreign_ids_answer_exactly_like_missing_ones(api: Api) -> None:
    asset = new_asset(api)
    artifact = new_artifact(api, asset["id"])
    missing_asset, missing_artifact = new_id("ma"), new_id("mda")
    outsiders = [(api.other, "dev"), (api.tenant, "prod"), (api.tenant, "staging")]

    def without_request_id(response) -> dict[str, Any]:
        error = error_of(response, 404)
        return {k: v for k, v in error.items() if k != "request_id"}

    probes = [
        ("GET", "/media-v2/assets/{}", asset["id"], missing_asset, None),
        ("GET", "/media-v2/artifacts/{}", artifact["id"], missing_artifact, None),
        ("POST", "/media-v2/assets/{}/artifacts", asset["id"], missing_asset,
         {"kind": "thumbnail", "uri": "https://cdn.example.com/t.jpg"}),
    ]
    for method, template, real, missing, body in probes:
        expected = without_request_id(api.client.request(
            method, template.format(missing), headers=api.headers(), json=body))
        for tenant, env in outsiders:
            response = api.client.request(method, template.format(real),
                                          headers=api.headers(tenant, env), json=body)
            assert without_request_id(response) == expected, (template, tenant, env)
            assert response.json()["error"]["request_id"] != ""
    # the refused registrations wrote nothing into the owner's asset
    detail = api.client.get(f"/media-v2/assets/{asset['id']}", headers=api.headers()).json()
    assert [a["id"] for a in detail["artifacts"]] == [artifact["id"]]


# ---- idempotency on the media_v2 POSTs -------------------------------------------------------


def test_idempotent_registration(api: Api) -> None:
    headers = {**api.headers(), "Idempotency-Key": "media-once-1"}
    body = {"source_uri": "https://cdn.example.com/once.mp4", "kind": "video"}
    first = api.client.post("/media-v2/assets", headers=headers, json=body)
    again = api.client.post("/media-v2/assets", headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    other = api.client.post("/media-v2/assets", headers=headers,
                            json={**body, "kind": "audio"})
    error_of(other, 409)
    listed = api.client.get("/media-v2/assets", headers=api.headers()).json()["items"]
    assert [a["id"] for a in listed] == [first.json()["id"]]


def test_same_key_and_body_from_another_caller_is_409(api: Api) -> None:
    """The replayed record would name the first caller: another actor or project is a 409."""
    body = {"source_uri": "https://cdn.example.com/who.mp4", "kind": "video"}
    first = api.client.post("/media-v2/assets", json=body,
                            headers={**api.headers(), "Idempotency-Key": "media-who"})
    assert first.status_code == 201
    for other in (api.headers(sub="u_bob"), api.headers(X_Project_Id="p_other")):
        again = api.client.post("/media-v2/assets", json=body,
                                headers={**other, "Idempotency-Key": "media-who"})
        error_of(again, 409)
    asset_id = first.json()["id"]
    derived = {"kind": "thumbnail", "uri": "https://cdn.example.com/who.png"}
    path = f"/media-v2/assets/{asset_id}/artifacts"
    made = api.client.post(path, json=derived,
                           headers={**api.headers(), "Idempotency-Key": "media-who-2"})
    assert made.status_code == 201
    error_of(api.client.post(path, json=derived, headers={**api.headers(sub="u_bob"),
                                                          "Idempotency-Key": "media-who-2"}), 409)
    upload = api.client.post("/media-v2/assets", files={"file": ("a.png", PNG, "image/png")},
                             headers={**api.headers(), "Idempotency-Key": "media-who-3"})
    assert upload.status_code == 201
    error_of(api.client.post("/media-v2/assets", files={"file": ("a.png", PNG, "image/png")},
                             headers={**api.headers(sub="u_bob"),
                                      "Idempotency-Key": "media-who-3"}), 409)
