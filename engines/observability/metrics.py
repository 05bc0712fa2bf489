"""Prometheus metrics: what operators scrape from `GET /metrics`.

One module-level set of metrics per process. With several workers,
`engines serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
they start: each worker then writes its samples to files there and a scrape
answered by any worker sums all of them (`prometheus_client.multiprocess`).

Label values are route templates, methods, statuses, kinds and reasons:
never tenant ids or user data, unless METRICS_TENANT_LABELS=true, which
turns on the separate `engines_tenant_*` families.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

disable_created_metrics()  # no `*_created` timestamp series: they double every family's size

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of a request no route matched: raw paths would be unbounded."""

REQUESTS = Counter("engines_http_requests_total", "HTTP requests by route template, method and "
                   "status", ["method", "route", "status"])
LATENCY = Histogram("engines_http_request_duration_seconds", "Time from the request's arrival "
                    "to the end of its response", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
REJECTED = Counter("engines_http_rejected_total", "Requests refused as too large (413), of an "
                   "unsupported media type (415) or invalid (422)", ["status", "route"])
UPLOAD_BYTES = Counter("engines_upload_bytes_total", "Request body bytes received on POSTs",
                       ["route"])
ARTIFACTS_CREATED = Counter("engines_artifacts_created_total", "Artifacts committed, by kind "
                            "(idempotent replays not counted)", ["kind"])
STORED_BYTES = Counter("engines_stored_bytes_total", "Bytes written to the blob store by "
                       "committed creates", ["kind"])
ARTIFACTS_DELETED = Counter("engines_artifacts_deleted_total", "Artifacts removed, by kind and "
                            "reason (deleted: by a client; expired: by retention)",
                            ["kind", "reason"])
GC_RUNS = Counter("engines_gc_runs_total", "Garbage-collection sweeps applied")
GC_DELETED_BLOBS = Counter("engines_gc_deleted_blobs_total", "Orphan blobs and unfinished "
                           "uploads removed by gc")
RETENTION_RUNS = Counter("engines_retention_runs_total", "Retention sweeps run")
RETENTION_EXPIRED = Counter("engines_retention_expired_total", "Artifacts expired by retention")
READY = Gauge("engines_ready", "1 if the component passed the last readiness probe, else 0",
              ["component"], multiprocess_mode="mostrecent")
TENANT_REQUESTS = Counter("engines_tenant_http_requests_total", "HTTP requests per tenant "
                          "(only with METRICS_TENANT_LABELS=true)",
                          ["tenant", "env", "method", "route", "status"])
TENANT_ARTIFACTS_CREATED = Counter("engines_tenant_artifacts_created_total", "Artifacts "
                                   "committed per tenant (only with METRICS_TENANT_LABELS=true)",
                                   ["tenant", "env", "kind"])

_REJECTED_STATUSES = frozenset({413, 415, 422})


class _Switches:
    """What this process's app asked for; set by `configure`."""

    enabled = True
    tenant_labels = False


def configure(*, enabled: bool, tenant_labels: bool) -> None:
    _Switches.enabled = enabled
    _Switches.tenant_labels = enabled and tenant_labels


def observe_request(*, method: str, route: str | None, status: int, seconds: float,
                    bytes_in: int, tenant: str | None, env: str | None) -> None:
    """Everything one finished request contributes; `tenant` and `env` only when the
    caller proved it acts there (engines.observability.requests.attribute)."""
    if not _Switches.enabled:
        return
    route = route or UNMATCHED_ROUTE
    status_text = str(status)
    REQUESTS.labels(method, route, status_text).inc()
    LATENCY.labels(method, route).observe(seconds)
    if status in _REJECTED_STATUSES:
        REJECTED.labels(status_text, route).inc()
    if method == "POST" and bytes_in:
        UPLOAD_BYTES.labels(route).inc(bytes_in)
    if _Switches.tenant_labels and tenant and env and route != UNMATCHED_ROUTE:
        TENANT_REQUESTS.labels(tenant, env, method, route, status_text).inc()


def record_created(kind: str, stored_bytes: int, *, tenant: str, env: str) -> None:
    """An artifact (or media_v2 upload) was committed with stored_bytes in the blob store."""
    if not _Switches.enabled:
        return
    ARTIFACTS_CREATED.labels(kind).inc()
    if stored_bytes:
        STORED_BYTES.labels(kind).inc(stored_bytes)
    if _Switches.tenant_labels:
        TENANT_ARTIFACTS_CREATED.labels(tenant, env, kind).inc()


def record_deleted(kind: str, reason: str) -> None:
    """An artifact was removed: reason `deleted` (a client's DELETE) or `expired` (retention)."""
    if reason not in ("deleted", "expired"):
        raise ValueError(f"reason must be 'deleted' or 'expired', not {reason!r}")
    ARTIFACTS_DELETED.labels(kind, reason).inc()


def record_gc(deleted_blobs: int) -> None:
    """One applied gc sweep that removed deleted_blobs objects or unfinished uploads."""
    GC_RUNS.inc()
    GC_DELETED_BLOBS.inc(deleted_blobs)


def record_retention(expired: int) -> None:
    """One retention sweep that expired `expired` artifacts (each also `record_deleted`)."""
    RETENTION_RUNS.inc()
    RETENTION_EXPIRED.inc(expired)


def set_ready(component: str, ready: bool) -> None:
    READY.labels(component).set(1 if ready else 0)


def exposition() -> bytes:
    """The text format of every metric: this process's, or all workers' in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(_request: Request) -> Response:
    """GET /metrics: no token needed, and none revealed (no request data in labels)."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


@contextlib.contextmanager
def multiprocess_dir(workers: int) -> Iterator[None]:
    """With several workers, give them one PROMETHEUS_MULTIPROC_DIR to share.

    Set before uvicorn starts the workers, so each imports prometheus_client
    in multiprocess mode. An operator's own directory is emptied of a previous
    run's samples first; otherwise a temporary one is made and removed after.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    if workers <= 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="engines-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
