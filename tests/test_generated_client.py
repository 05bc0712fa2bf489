"""A client generated from the served OpenAPI document works against the real server.

`openapi-python-client` (pinned in the test extra; it runs offline) reads
`/openapi.json` from a live `engines serve`, and the code it writes is then
the only thing used to talk to that server: a raw-bytes preview, a multipart
preview, a replay and an audit are created, listed, their content fetched as
bytes (whole and one Range) and their lineage read. Any warning the generator
prints about our document fails the test: a warning means an operation, a
body or a response was left out of the client.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from conftest import PNG, SIGNING_KEY
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import Server, running_server

pytestmark = pytest.mark.slow
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "canvas_store_client"
CANVAS = "c_generated"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("generated-client")
    env = {"DATABASE_URL": f"sqlite:///{workdir}/engines.db",
           "MEDIA_LOCAL_ROOT": str(workdir / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY}
    with running_server(env, workdir) as srv:
        yield srv


@pytest.fixture(scope="module")
def generated(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, imported; its generator output must have no warning."""
    workdir = tmp_path_factory.mktemp("generator")
    document = workdir / "openapi.json"
    document.write_bytes(httpx.get(f"{server.url}/openapi.json", timeout=10).content)
    config = workdir / "config.json"
    # no post hooks: they would run ruff over the generated code, which is not ours to lint
    config.write_text(json.dumps({"post_hooks": []}))
    result = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(document), "--config", str(config),
         "--meta", "none", "--output-path", str(workdir / PACKAGE), "--fail-on-warning"],
        capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _api(name: str) -> ModuleType:
    return _module(f"api.canvas_artifacts.{name}")


@pytest.fixture(scope="module")
def client(generated: ModuleType, server: Server):
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_gen",
                        tenants=["t_acme"], role="member")
    with generated.AuthenticatedClient(base_url=server.url, token=token) as api:
        yield api


@pytest.fixture(scope="module")
def routing(generated: ModuleType) -> dict[str, object]:
    """The routing headers, as the generated functions' keyword arguments."""
    return {"x_tenant_id": "t_acme", "x_env": _module("models").Env.DEV,
            "x_project_id": "p_web"}


def _created(response, kind: str):
    assert response.status_code == 201, response.content
    record = response.parsed
    assert type(record).__name__ == "ArtifactRecord", record
    assert record.kind.value == kind
    return record


def test_create_list_fetch_and_lineage_with_the_generated_client(client, routing) -> None:
    models = _module("models")
    File = _module("types").File  # noqa: N806 - the generated class

    raw = _created(_api("create_preview").sync_detailed(
        CANVAS, client=client, rev=7, body=File(payload=io.BytesIO(PNG), file_name="p.png"),
        **routing), "preview")
    assert raw.mime_type == "image/png"  # read from the bytes, sent as octet-stream
    assert raw.size_bytes == len(PNG)
    form = _created(_api("create_preview").sync_detailed(
        CANVAS, client=client, rev=8, idempotency_key="gen-form-1", body=models.FileUpload(
            file=File(payload=io.BytesIO(PNG), file_name="p.png", mime_type="image/png")),
        **routing), "preview")
    assert form.sha256 == raw.sha256

    keyframes = [models.Keyframe(t_ms=0, type_=models.KeyframeType.SNAPSHOT, rev=3),
                 models.Keyframe(t_ms=40, type_=models.KeyframeType.COMMIT),
                 models.Keyframe(t_ms=90, type_=models.KeyframeType.SNAPSHOT)]
    replay = _created(_api("create_replay").sync_detailed(
        CANVAS, client=client, body=models.ReplayDocument(rev=9, rev_from=3,
                                                          keyframes=keyframes),
        **routing), "replay")
    assert replay.rev == 9
    report = models.AuditReport(
        v=1, kind="render", status=models.AuditReportStatus.PASSED, checks=[], findings=[],
        summary=models.AuditSummary(errors=0, warnings=2), generated_at=datetime.now(UTC))
    audit = _created(_api("create_audit").sync_detailed(
        CANVAS, client=client, rev=9, body=report, **routing), "audit")
    placeholder = _created(_api("create_audit").sync_detailed(
        CANVAS, client=client, rev=10, **routing), "audit")

    page = _api("list_artifacts").sync(CANVAS, client=client, **routing)
    assert [r.id for r in page.items] == [placeholder.id, audit.id, replay.id, form.id, raw.id]
    only_previews = _api("list_artifacts").sync(
        CANVAS, client=client, kind=models.ListArtifactsKindType0.PREVIEW, limit=1, **routing)
    assert [r.id for r in only_previews.items] == [form.id]
    assert only_previews.next_cursor
    latest = _api("get_latest_artifact").sync(
        CANVAS, client=client, kind=models.GetLatestArtifactKind.REPLAY, **routing)
    assert latest.id == replay.id

    content = _api("get_artifact_content")
    whole = content.sync(CANVAS, raw.id, client=client, **routing)
    assert whole.payload.read() == PNG  # bytes, not text or JSON
    part = content.sync_detailed(CANVAS, raw.id, client=client, range_="bytes=0-7", **routing)
    assert part.status_code == 206
    assert part.parsed.payload.read() == PNG[:8]
    stored_replay = json.loads(content.sync(CANVAS, replay.id, client=client,
                                            **routing).payload.read())
    assert [f["t_ms"] for f in stored_replay["keyframes"]] == [0, 40, 90]
    window = json.loads(content.sync(CANVAS, replay.id, client=client, from_ms=30, to_ms=60,
                                     **routing).payload.read())
    assert [f["t_ms"] for f in window["keyframes"]] == [0, 40]
    stored_audit = json.loads(content.sync(CANVAS, audit.id, client=client,
                                           **routing).payload.read())
    assert stored_audit["summary"] == {"errors": 0, "warnings": 2}

    lineage = _api("get_artifact_lineage").sync(CANVAS, replay.id, client=client, **routing)
    assert lineage.artifact_id == replay.id
    assert [d.subject_id for d in lineage.documents] == [replay.id]
    assert lineage.documents[0].kind == models.NexusKind.CANVAS_REPLAY
    assert [e.event_type for e in lineage.events] == ["canvas.replay.created"]
    assert lineage.events[0].lineage["project_id"] == "p_web"


def test_errors_come_back_as_the_typed_envelope(client, routing) -> None:
    """A wrong tenant is a 403 and an unknown id a 404, both parsed as ErrorEnvelope."""
    get_artifact = _api("get_artifact")
    forbidden = get_artifact.sync_detailed(CANVAS, "art_missing", client=client,
                                           **{**routing, "x_tenant_id": "t_other"})
    assert forbidden.status_code == 403
    assert forbidden.parsed.error.code == "auth.tenant_forbidden"
    missing = get_artifact.sync_detailed(CANVAS, "art_missing", client=client, **routing)
    assert missing.status_code == 404
    assert missing.parsed.error.request_id == missing.headers["x-request-id"]


def test_media_v2_asset_upload_with_the_generated_client(client, routing) -> None:
    models = _module("models")
    File = _module("types").File  # noqa: N806 - the generated class
    create = _module("api.media_v2.create_media_asset")
    asset = create.sync(client=client, body=models.FileUpload(
        file=File(payload=io.BytesIO(PNG), file_name="a.png", mime_type="image/png")), **routing)
    assert type(asset).__name__ == "MediaAsset", asset
    detail = _module("api.media_v2.get_media_asset").sync(asset.id, client=client, **routing)
    assert detail.asset.id == asset.id
    assert detail.asset.size_bytes == len(PNG)
