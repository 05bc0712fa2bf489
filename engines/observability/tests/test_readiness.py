"""`/readyz` checks the blob store as well as the database, cheaply and without writing."""

from __future__ import annotations

import shutil

from prometheus_client.parser import text_string_to_metric_families

from conftest import Stack
from engines.observability.readiness import ReadinessProbe


def ready_gauges(stack: Stack) -> dict[str, float]:
    text = stack.client.get("/metrics").text
    return {s.labels["component"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "engines_ready"}


def test_ready_on_both_stacks_and_nothing_written(stack: Stack) -> None:
    for _ in range(3):
        response = stack.client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "database": "ok", "storage": "ok"}
    assert ready_gauges(stack) == {"database": 1.0, "storage": 1.0}
    if stack.name == "s3-postgres":
        client, bucket = stack.runtime.store.client, stack.settings.raw_bucket  # type: ignore[attr-defined]
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    else:
        assert not any(stack.settings.media_local_root.rglob("*"))


def test_missing_bucket_is_not_ready(make_stack) -> None:
    stack = make_stack("s3-postgres", raw_bucket="canvas-never-created")
    response = stack.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok",
                               "storage": "no such bucket"}
    assert ready_gauges(stack)["storage"] == 0.0


def test_missing_local_directory_is_not_ready(local: Stack) -> None:
    shutil.rmtree(local.settings.media_local_root)
    response = local.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["storage"] == "unreachable"


def test_the_storage_probe_is_cached(local: Stack) -> None:
    cached = ReadinessProbe(local.runtime, cache_seconds=3600)
    uncached = ReadinessProbe(local.runtime, cache_seconds=0)
    assert cached.check() == uncached.check() == {"database": "ok", "storage": "ok"}
    shutil.rmtree(local.settings.media_local_root)
    assert cached.check()["storage"] == "ok", "answered from the cache, no new probe"
    assert uncached.check()["storage"] == "unreachable"
