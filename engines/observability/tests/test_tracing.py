"""Traces with OTEL_EXPORTER_OTLP_ENDPOINT set: request, database and S3 spans in one trace.

The OTLP exporter is swapped for the SDK's in-memory one; everything else
(instrumentations, providers, the app) is what production runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from conftest import PNG, Stack, new_canvas
from engines.observability import tracing
from engines.observability.logging import REQUEST_LOGGER

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "otlp_exporter", lambda: memory)
    return memory


@pytest.fixture
def traced(make_stack, exporter: InMemorySpanExporter) -> Iterator[Stack]:
    stack = make_stack("s3-postgres", otel_exporter_otlp_endpoint="http://collector:4318")
    yield stack
    stack.client.app.state.tracing.shutdown()


def test_a_create_is_one_trace_with_database_and_s3_spans(
        traced: Stack, exporter: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture) -> None:
    stack, client = traced, traced.client
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        response = client.post(f"/canvas/{new_canvas()}/artifacts/preview?rev=1", content=PNG,
                               headers={**stack.headers(), "Content-Type": "image/png"})
    assert response.status_code == 201
    client.app.state.tracing.provider.force_flush()  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()

    [server] = [s for s in spans if s.attributes.get("engines.request_id")]
    assert server.attributes["engines.request_id"] == response.headers["x-request-id"]
    assert server.attributes["engines.correlation_id"] == response.headers["x-correlation-id"]
    assert server.attributes.get("http.route") == "/canvas/{canvas_id}/artifacts/preview"
    trace_id = server.context.trace_id
    database = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    s3 = [s for s in spans if s.attributes.get("rpc.service") == "S3"]
    assert database and s3, sorted({s.name for s in spans})
    assert {s.context.trace_id for s in database + s3} == {trace_id}, "children of the request"
    assert any(s.name.startswith("INSERT") for s in database)
    assert any(s.attributes.get("rpc.method") == "PutObject" for s in s3)

    [record] = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    assert record.fields["trace_id"] == format(trace_id, "032x")  # type: ignore[attr-defined]


def test_no_endpoint_no_tracing(local: Stack) -> None:
    assert getattr(local.client.app.state, "tracing", None) is None
    assert tracing.annotate_current_span("r", "c") is None
