"""Request logs: one line per request with the routing keys, and never a secret."""

from __future__ import annotations

import logging

import orjson
import pytest

from conftest import PNG, SIGNING_KEY, Stack, new_canvas
from engines.config import Settings
from engines.observability.logging import (
    REQUEST_LOGGER,
    JsonFormatter,
    TextFormatter,
    log_config,
)


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REQUEST_LOGGER]


def test_one_request_record_with_ids_routing_keys_and_sizes(
        local: Stack, caplog: pytest.LogCaptureFixture) -> None:
    canvas = new_canvas()
    headers = {**local.headers(), "Content-Type": "image/png", "X-Correlation-Id": "corr-42"}
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        response = local.client.post(f"/canvas/{canvas}/artifacts/preview?rev=3", content=PNG,
                                     headers=headers)
    assert response.status_code == 201
    [record] = request_lines(caplog)
    fields = record.fields  # type: ignore[attr-defined]
    assert fields == {
        "request_id": response.headers["x-request-id"], "correlation_id": "corr-42",
        "tenant": "t_acme", "env": "dev", "method": "POST",
        "route": "/canvas/{canvas_id}/artifacts/preview", "status": 201,
        "duration_ms": fields["duration_ms"], "bytes_in": len(PNG),
        "bytes_out": len(response.content)}
    assert fields["duration_ms"] > 0

    line = orjson.loads(JsonFormatter().format(record))
    assert line["logger"] == REQUEST_LOGGER and line["level"] == "info"
    assert line["route"] == "/canvas/{canvas_id}/artifacts/preview" and line["status"] == 201
    text = TextFormatter().format(record)
    assert "POST /canvas/{canvas_id}/artifacts/preview 201 request_id=" in text
    assert "tenant=t_acme" in text and "route=" not in text


def test_secrets_never_reach_a_formatted_line(local: Stack,
                                              caplog: pytest.LogCaptureFixture) -> None:
    token = local.token()
    password = "db-password-never-logged"
    log_config(Settings(auth_jwt_signing=SIGNING_KEY,
                        database_url=f"postgresql+psycopg://u:{password}@db/x"))
    with caplog.at_level(logging.INFO):
        local.client.get(f"/canvas/{new_canvas()}/artifacts?token={token}",
                         headers={**local.headers(), "Authorization": f"Bearer {token}"})
        local.client.get("/canvas/c_1/artifacts", headers={"Authorization": "Bearer forged.x.y"})
        logging.getLogger("engines.test").warning(
            "upstream said Authorization: Bearer %s with key %s, db %s; raw %s", "opaque-token",
            SIGNING_KEY, password, token)
    assert caplog.records
    for formatter in (JsonFormatter(), TextFormatter()):
        out = "\n".join(formatter.format(record) for record in caplog.records)
        for secret in (token, SIGNING_KEY, password, "opaque-token", "forged.x.y"):
            assert secret not in out
        assert "[redacted]" in out
