"""`GET /metrics`: what an operator's Prometheus scrapes, with no token and no tenant data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PNG, Stack, new_canvas
from engines.observability import metrics

PREVIEW_ROUTE = "/canvas/{canvas_id}/artifacts/preview"


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an unauthenticated scrape, keyed by (name, sorted labels)."""
    response = stack.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_artifacts_bytes_and_rejections_are_counted(local: Stack) -> None:
    canvas = new_canvas()
    before = scrape(local)
    headers = local.headers()
    created = local.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                                headers={**headers, "Content-Type": "image/png"})
    assert created.status_code == 201
    artifact = created.json()["id"]
    assert local.client.get(f"/canvas/{canvas}/artifacts/{artifact}/content",
                            headers=headers).status_code == 200
    rejected = {
        413: local.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1",
                               content=b"x" * (local.settings.max_preview_bytes + 1),
                               headers={**headers, "Content-Type": "image/png"}),
        415: local.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=b"GIF89a",
                               headers={**headers, "Content-Type": "image/png"}),
        422: local.client.post(f"/canvas/{canvas}/artifacts/replay", content=b'{"rev": -1}',
                               headers={**headers, "Content-Type": "application/json"}),
    }
    assert {status: r.status_code for status, r in rejected.items()} == {
        413: 413, 415: 415, 422: 422}
    assert local.client.get(f"/no/such/{canvas}").status_code == 404

    after = scrape(local)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("engines_http_requests_total", method="POST", route=PREVIEW_ROUTE,
                 status="201") == 1
    assert delta("engines_http_requests_total", method="GET",
                 route="/canvas/{canvas_id}/artifacts/{artifact_id}/content", status="200") == 1
    assert delta("engines_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == 1
    assert delta("engines_http_request_duration_seconds_count", method="POST",
                 route=PREVIEW_ROUTE) == 3
    assert delta("engines_artifacts_created_total", kind="preview") == 1
    assert delta("engines_stored_bytes_total", kind="preview") == len(PNG)
    assert delta("engines_upload_bytes_total", route=PREVIEW_ROUTE) >= len(PNG)
    for status, route in ((413, PREVIEW_ROUTE), (415, PREVIEW_ROUTE),
                          (422, "/canvas/{canvas_id}/artifacts/replay")):
        assert delta("engines_http_rejected_total", status=str(status), route=route) == 1

    text = local.client.get("/metrics").text
    assert "t_acme" not in text and canvas not in text and artifact not in text
    assert not any(name.startswith("engines_tenant_") for name, _ in after)


def test_an_idempotent_replay_is_not_counted_as_created(local: Stack) -> None:
    canvas = new_canvas()
    headers = {**local.headers(), "Content-Type": "image/png", "Idempotency-Key": "k-1"}
    before = scrape(local)
    for _ in range(2):
        assert local.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                                 headers=headers).status_code == 201
    after = scrape(local)
    assert value(after, "engines_artifacts_created_total", kind="preview") - value(
        before, "engines_artifacts_created_total", kind="preview") == 1


def test_tenant_labels_only_when_asked_for(make_stack) -> None:
    stack = make_stack("local-sqlite", metrics_tenant_labels=True)
    canvas = new_canvas()
    assert stack.client.post(f"/canvas/{canvas}/artifacts/audit?rev=1",
                             headers=stack.headers()).status_code == 201
    # a caller whose token does not cover the tenant it names is not attributed to it
    assert stack.client.get(f"/canvas/{canvas}/artifacts",
                            headers=stack.headers("t_other") | {"X-Tenant-Id": "t_spoof"},
                            ).status_code == 403
    samples = scrape(stack)
    assert value(samples, "engines_tenant_artifacts_created_total", tenant="t_acme", env="dev",
                 kind="audit") >= 1
    assert value(samples, "engines_tenant_http_requests_total", tenant="t_acme", env="dev",
                 method="POST", route="/canvas/{canvas_id}/artifacts/audit", status="201") >= 1
    assert "t_spoof" not in stack.client.get("/metrics").text


def test_metrics_can_be_switched_off(make_stack) -> None:
    stack = make_stack("local-sqlite", metrics_enabled=False)
    response = stack.client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_metrics_never_ask_for_or_echo_a_token(local: Stack) -> None:
    token = local.token()
    response = local.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert token not in response.text
    assert "www-authenticate" not in response.headers
    assert "/metrics" not in local.client.get("/openapi.json").json()["paths"]


def test_lifecycle_counters_for_the_deletion_gc_and_retention_code(local: Stack) -> None:
    before = scrape(local)
    metrics.record_deleted("replay", "deleted")
    metrics.record_deleted("preview", "expired")
    metrics.record_gc(deleted_blobs=3)
    metrics.record_retention(expired=1)
    after = scrape(local)
    for name, labels, expected in (
            ("engines_artifacts_deleted_total", {"kind": "replay", "reason": "deleted"}, 1),
            ("engines_artifacts_deleted_total", {"kind": "preview", "reason": "expired"}, 1),
            ("engines_gc_runs_total", {}, 1), ("engines_gc_deleted_blobs_total", {}, 3),
            ("engines_retention_runs_total", {}, 1), ("engines_retention_expired_total", {}, 1)):
        assert value(after, name, **labels) - value(before, name, **labels) == expected, name
    with pytest.raises(ValueError, match="reason"):
        metrics.record_deleted("preview", "purged")


def test_several_workers_get_a_shared_directory_that_is_removed_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    with metrics.multiprocess_dir(1):
        assert metrics.MULTIPROC_ENV not in os.environ, "one worker: plain in-process metrics"
    with metrics.multiprocess_dir(2):
        shared = Path(os.environ[metrics.MULTIPROC_ENV])
        assert shared.is_dir()
    assert metrics.MULTIPROC_ENV not in os.environ and not shared.exists()

    chosen = tmp_path / "prom"
    chosen.mkdir()
    (chosen / "counter_123.db").write_bytes(b"samples of a previous run")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(chosen))
    with metrics.multiprocess_dir(2):
        assert os.environ[metrics.MULTIPROC_ENV] == str(chosen)
        assert not list(chosen.iterdir()), "stale samples would be summed into the new run"
    assert chosen.is_dir()


def _tenant_series(stack: Stack) -> set[tuple[tuple[str, str], ...]]:
    return {labels for name, labels in scrape(stack)
            if name == "engines_tenant_http_requests_total"}


@pytest.mark.parametrize("stack_name", ["local-sqlite", "s3-postgres"])
def test_only_a_proven_tenant_is_a_metric_label(make_stack, stack_name: str) -> None:
    """Made-up X-Tenant-Id values add no series; a token's tenant and a signed URL's do."""
    import uuid

    from engines.canvas_artifacts.signed import PATH as SIGNED_PATH
    from engines.canvas_artifacts.tests.helpers import create_preview, created, new_tenant

    stack = make_stack(stack_name, metrics_tenant_labels=True)
    before = _tenant_series(stack)
    made_up = [f"t_madeup_{uuid.uuid4().hex[:10]}" for _ in range(8)]
    canvas = new_canvas()
    forged = stack.token(made_up[0])[:-4] + "AAAA"
    for tenant in made_up:
        claimed = {"X-Tenant-Id": tenant, "X-Env": "dev", "X-Project-Id": "p_main"}
        assert stack.client.get("/healthz", headers=claimed).status_code == 200
        assert stack.client.get("/metrics", headers=claimed).status_code == 200
        assert stack.client.get(f"/canvas/{canvas}/artifacts", headers=claimed).status_code == 401
        assert stack.client.get(f"/canvas/{canvas}/artifacts", headers={
            **claimed, "Authorization": f"Bearer {forged}"}).status_code == 401
        assert stack.client.get(f"/canvas/{canvas}/artifacts", headers={
            **stack.headers("t_acme"), "X-Tenant-Id": tenant}).status_code == 403
    assert _tenant_series(stack) == before
    text = stack.client.get("/metrics").text
    assert not any(tenant in text for tenant in made_up)

    proven = new_tenant()
    record = created(create_preview(stack, canvas, tenant=proven))
    signing = stack.client.post(f"/canvas/{canvas}/artifacts/{record['id']}/signed-url",
                                headers=stack.headers(proven, role="viewer"))
    assert signing.status_code == 200, signing.text
    signed_url = signing.json()["url"].removeprefix("http://testserver")
    fetched = stack.client.get(signed_url, headers={"X-Tenant-Id": made_up[0], "X-Env": "prod"})
    assert fetched.status_code == 200
    samples = scrape(stack)
    assert value(samples, "engines_tenant_http_requests_total", tenant=proven, env="dev",
                 method="POST", route=PREVIEW_ROUTE, status="201") == 1
    assert value(samples, "engines_tenant_http_requests_total", tenant=proven, env="dev",
                 method="GET", route=SIGNED_PATH, status="200") == 1
    added = {dict(labels)["tenant"] for labels in _tenant_series(stack) - before}
    assert added == {proven}
