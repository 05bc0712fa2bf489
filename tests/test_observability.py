"""The real `engines serve` with two workers: metrics summed over both, JSON request logs.

What an operator sees: a scrape answered by either worker counts every
request; stderr has one JSON object per line, one line per request (uvicorn's
access log does not repeat it), and neither the token nor the signing key.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PNG, SIGNING_KEY, new_canvas
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import running_server

pytestmark = pytest.mark.slow


def _count(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_two_workers_json_logs_and_summed_metrics(tmp_path: Path) -> None:
    env = {"ENGINES_HOME": str(tmp_path / "home"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "LOG_FORMAT": "json"}
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=["t_acme"],
                        role="member")
    canvas = new_canvas()
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main"}
    with running_server(env, tmp_path, workers=2, serve_args=("--log-level", "info")) as srv:
        for _ in range(20):  # a new connection each: the two workers share them
            assert httpx.get(f"{srv.url}/healthz").status_code == 200
        created = httpx.post(f"{srv.url}/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                             headers={**headers, "Content-Type": "image/png"})
        assert created.status_code == 201
        denied = httpx.get(f"{srv.url}/canvas/{canvas}/artifacts",
                           headers={**headers, "Authorization": "Bearer eyJhbGciOi.eyJzdWIi.sig"})
        assert denied.status_code == 401
        scrapes = [httpx.get(f"{srv.url}/metrics").text for _ in range(4)]
    log = srv.log.read_text()

    for text in scrapes:  # whichever worker answered, it reports both workers' requests
        assert _count(text, "engines_http_requests_total", route="/healthz") == 20
        assert _count(text, "engines_artifacts_created_total", kind="preview") == 1
        assert _count(text, "engines_stored_bytes_total", kind="preview") == len(PNG)

    json_lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    banner = [line for line in log.splitlines() if not line.startswith("{")]
    assert all(line.startswith("engines: ") for line in banner), banner
    requests = [line for line in json_lines if line["logger"] == "engines.request"]
    assert len([r for r in requests if r["route"] == "/healthz"]) == 20
    [create] = [r for r in requests if r["method"] == "POST"]
    assert create["request_id"] == created.headers["x-request-id"]
    assert (create["route"], create["status"], create["tenant"], create["env"],
            create["bytes_in"]) == ("/canvas/{canvas_id}/artifacts/preview", 201, "t_acme",
                                    "dev", len(PNG))
    assert create["bytes_out"] == len(created.content)
    assert sum(1 for line in log.splitlines() if created.headers["x-request-id"] in line) == 1
    assert f"/canvas/{canvas}/" not in log, "no raw paths: uvicorn's access log is off"
    for secret in (token, SIGNING_KEY, "eyJhbGciOi.eyJzdWIi.sig"):
        assert secret not in log
