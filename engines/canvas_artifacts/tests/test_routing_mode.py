"""X-Mode, the later engines contract: validated when sent, recorded in lineage and events,
and under ROUTING_MODE=mode required (X-Env refused, env from ENGINES_ENV, the local
store for `lab` only). Every rule is checked on the lean path (`?rev=N`, a plain GET)
and on FastAPI's full path (`?rev=01`, a query parameter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PNG, Stack
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    created,
    new_tenant,
    url,
)
from engines.events.feed import read_after
from tests.test_cli import output, run_cli

QUERIES = ("?rev=1", "?rev=01")
"""The lean path's plain query, and one only FastAPI's full path parses."""


def _mode_headers(stack: Stack, tenant: str, mode: str | None, **extra: str) -> dict[str, str]:
    headers = {k: v for k, v in stack.headers(tenant).items() if k != "X-Env"}
    if mode is not None:
        headers["X-Mode"] = mode
    return {**headers, "Content-Type": "image/png", **extra}


def _post(stack: Stack, headers: dict[str, str], query: str = "?rev=1"):
    return stack.client.post(url("c_mode", f"/preview{query}"), content=PNG, headers=headers)


@pytest.mark.parametrize("query", QUERIES)
def test_invalid_x_mode_is_400_and_stores_nothing(stack: Stack, query: str) -> None:
    tenant = new_tenant()
    for bad in ("dev", "SAAS-x", ""):
        headers = {**stack.headers(tenant), "Content-Type": "image/png", "X-Mode": bad}
        assert_error(_post(stack, headers, query), 400, "request.bad_headers")
    assert_nothing_kept(stack, tenant)


def test_x_mode_is_recorded_in_lineage_and_events(stack: Stack) -> None:
    tenant = new_tenant()
    headers = {**stack.headers(tenant), "Content-Type": "image/png", "X-Mode": "Enterprise"}
    record = created(_post(stack, headers))
    plain = created(_post(stack, {**stack.headers(tenant), "Content-Type": "image/png"}))
    path = url("c_mode", f"/{record['id']}")
    lineage = stack.client.get(f"{path}/lineage", headers=stack.headers(tenant)).json()
    assert lineage["documents"][0]["lineage"]["mode"] == "enterprise"
    assert lineage["events"][0]["lineage"]["mode"] == "enterprise"
    deleted = stack.client.delete(path, headers={**stack.headers(tenant), "X-Mode": "lab"})
    assert deleted.status_code == 204
    with stack.runtime.engine.connect() as conn:
        events, _, _ = read_after(conn, (tenant, "dev"), 0)
    assert [(e.type, e.body["routing"].get("mode")) for e in events] == [
        ("artifact_written", "enterprise"), ("artifact_written", None),
        ("artifact_deleted", "lab")]
    assert events[1].body["data"]["artifact_id"] == plain["id"]


@pytest.mark.parametrize("query", QUERIES)
def test_mode_routing_requires_x_mode_and_refuses_x_env(stack_name: str, make_stack,
                                                        query: str) -> None:
    stack = make_stack(stack_name, routing_mode="mode", engines_env="stage")
    tenant = new_tenant()
    missing = assert_error(_post(stack, _mode_headers(stack, tenant, None), query), 400)
    assert "X-Mode header is required" in missing["message"]
    refused = assert_error(_post(stack, _mode_headers(stack, tenant, "lab", **{"X-Env": "dev"}),
                                 query), 400, "request.bad_headers")
    assert refused["message"] == "X-Env header is not allowed; use X-Mode (saas|enterprise|lab)"
    assert_nothing_kept(stack, tenant)
    record = created(_post(stack, _mode_headers(stack, tenant, "lab"), query))
    assert record["env"] == "staging"
    reads = _mode_headers(stack, tenant, "lab")
    got = stack.client.get(url("c_mode", f"/{record['id']}/content"), headers=reads)
    assert got.status_code == 200 and got.content == PNG
    with_env = stack.client.get(url("c_mode", f"/{record['id']}/content"),
                                headers={**reads, "X-Env": "staging"})
    assert_error(with_env, 400, "request.bad_headers")


@pytest.mark.parametrize("query", QUERIES)
def test_mode_routing_without_bucket_keeps_saas_and_enterprise_off_local_storage(
        make_stack, query: str) -> None:
    stack = make_stack("local-sqlite", routing_mode="mode")
    tenant = new_tenant()
    for mode in ("saas", "enterprise"):
        refused = _post(stack, _mode_headers(stack, tenant, mode), query)
        assert_error(refused, 503, "storage.local_forbidden")
        listed = stack.client.get(url("c_mode"), headers=_mode_headers(stack, tenant, mode))
        assert_error(listed, 503, "storage.local_forbidden")
    assert_nothing_kept(stack, tenant)
    # auth still comes first: a stranger learns nothing about the store
    assert_error(_post(stack, {**_mode_headers(stack, tenant, "saas"), "Authorization": "x"},
                       query), 401)
    record = created(_post(stack, _mode_headers(stack, tenant, "lab"), query))
    assert record["env"] == "dev"


def test_mode_routing_with_a_bucket_serves_every_mode(make_stack) -> None:
    stack = make_stack("s3-postgres", routing_mode="mode")
    tenant = new_tenant()
    for mode in ("saas", "enterprise", "lab"):
        assert created(_post(stack, _mode_headers(stack, tenant, mode)))["uri"].startswith("s3://")


def test_doctor_says_which_modes_may_use_local_storage(tmp_path: Path) -> None:
    result = run_cli("doctor", cwd=tmp_path, env={"ROUTING_MODE": "mode",
                                                  "ENGINES_ENV": "prod"})
    text = output(result)
    assert "X-Mode required, X-Env refused" in text
    assert "ENGINES_ENV=prod" in text
    assert "storage.local_forbidden" in text and "lab only" in text
    plain = output(run_cli("doctor", cwd=tmp_path, env={}))
    assert "ROUTING_MODE=env" in plain and "storage.local_forbidden" not in plain
