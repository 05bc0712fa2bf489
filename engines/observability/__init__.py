"""Metrics, request logs, traces and readiness: what operators watch the service with."""

from __future__ import annotations

from fastapi import FastAPI

from engines.observability import metrics, tracing
from engines.observability.logging import register_secrets, settings_secrets
from engines.observability.requests import RequestObserver
from engines.runtime import Runtime


def install(app: FastAPI, runtime: Runtime) -> None:
    """Request observation, `GET /metrics` (METRICS_ENABLED) and tracing (OTEL_*)."""
    settings = runtime.settings
    register_secrets(*settings_secrets(settings))
    metrics.configure(enabled=settings.metrics_enabled,
                      tenant_labels=settings.metrics_tenant_labels)
    app.add_middleware(RequestObserver)
    if settings.metrics_enabled:
        app.add_route("/metrics", metrics.metrics_endpoint, methods=["GET"],
                      include_in_schema=False)
    if settings.otel_exporter_otlp_endpoint:
        app.state.tracing = tracing.install(app, runtime)
