"""OpenTelemetry traces, on when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Needs the `otel` extra (`pip install -e '.[otel]'`): the official SDK, OTLP
exporter and the FastAPI, SQLAlchemy and botocore instrumentations, so a
request's span has its database statements and S3 calls as children. The
request span carries `engines.request_id` and `engines.correlation_id`, and
the request log line carries the span's `trace_id`: either finds the other.
The standard OTEL_* variables (service name, protocol, headers, sampler)
are read by the SDK itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from engines.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("engines.tracing")
SERVICE_NAME = "northstar-engines-canvas"

try:
    from opentelemetry import trace as _trace
except ImportError:  # opentelemetry-api is optional too
    _trace = None  # type: ignore[assignment]


def annotate_current_span(request_id: str | None, correlation_id: str | None) -> str | None:
    """Tag the active request span with our ids; return its trace id (hex), if tracing."""
    if _trace is None:
        return None
    span = _trace.get_current_span()
    if not span.is_recording():
        return None
    if request_id:
        span.set_attribute("engines.request_id", request_id)
    if correlation_id:
        span.set_attribute("engines.correlation_id", correlation_id)
    return format(span.get_span_context().trace_id, "032x")


def otlp_exporter() -> SpanExporter:
    """The OTLP exporter for OTEL_EXPORTER_OTLP_PROTOCOL: `grpc`, else http/protobuf."""
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


@dataclass
class Tracing:
    """What `install` switched on, so that tests (and shutdown) can switch it off."""

    app: FastAPI
    provider: Any
    instrumentors: list[Any]

    def shutdown(self) -> None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.uninstrument_app(self.app)
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()


def install(app: FastAPI, runtime: Runtime, exporter: SpanExporter | None = None,
            *, batch: bool = True) -> Tracing | None:
    """Instrument app, its database engine and boto3; spans go to exporter (default OTLP)."""
    try:
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.error("OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
                  "(pip install 'northstar-engines-canvas[otel]'): tracing is off")
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter = exporter or otlp_exporter()
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,
                                       exclude_spans=["receive", "send"])
    database = SQLAlchemyInstrumentor()
    # its declared range stops at SQLAlchemy 2.0; the event hooks it uses are unchanged in 2.1
    database.instrument(engine=runtime.engine, tracer_provider=provider, skip_dep_check=True)
    s3 = BotocoreInstrumentor()
    s3.instrument(tracer_provider=provider)
    return Tracing(app=app, provider=provider, instrumentors=[database, s3])
