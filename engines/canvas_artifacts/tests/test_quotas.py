"""Quotas per tenant (`engines quota`), GET /usage, and usage that never drifts.

Quotas are set with the real `engines quota` command on the stack's own
database; creates go through the API (lean path `?rev=N` and full path),
and what was stored is read from the backends themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from conftest import PNG, Stack, new_canvas
from engines.canvas_artifacts.quotas import parse_size
from engines.canvas_artifacts.repository import canvas_artifacts
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    blob_keys,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
    server_env,
    url,
)
from engines.lifecycle.purge import purge
from tests._inprocess_cli import call_cli
from tests._server import running_server
from tests.test_cli import clean_env, output, run_cli


def quota(stack: Stack, tmp_path: Path, *args: str) -> str:
    """`engines quota ARGS` against the stack's database; returns what it printed.

    In process (engines.cli.main, the script's own entry): test_cli_set_show_unset runs
    the real script once, the rest would each spend a second re-importing the package."""
    result = call_cli("quota", *args, env=clean_env(tmp_path, {
        "DATABASE_URL": stack.settings.database_url}))
    assert result.returncode == 0, output(result)
    return result.stdout


def usage(stack: Stack, tenant: str, env: str = "dev") -> dict:  # type: ignore[type-arg]
    response = stack.client.get("/usage", headers=stack.headers(tenant, env, role="viewer"))
    assert response.status_code == 200, response.text
    return response.json()


def live_usage(stack: Stack, tenant: str, env: str | None = None) -> dict[str, tuple[int, int]]:
    """What the records themselves add up to, per kind (of one env, or all)."""
    c = canvas_artifacts.c
    query = select(c.kind, func.coalesce(func.sum(c.size_bytes), 0), func.count()).where(
        c.tenant_id == tenant, c.deleted_at.is_(None)).group_by(c.kind)
    if env is not None:
        query = query.where(c.env == env)
    with stack.runtime.engine.connect() as conn:
        return {kind: (int(size), int(count)) for kind, size, count in conn.execute(query)}


def counted(stack: Stack, tenant: str, env: str = "dev") -> dict[str, tuple[int, int]]:
    kinds = usage(stack, tenant, env)["kinds"]
    return {kind: (v["bytes"], v["count"]) for kind, v in kinds.items() if v["count"]}


def test_parse_size() -> None:
    assert parse_size("10GiB") == 10 * 1024**3
    assert parse_size("500MB") == 500 * 1000**2
    assert parse_size("1.5KiB") == 1536
    assert parse_size("4096") == 4096
    for bad in ("10 GiBs", "-1", "GiB", ""):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_cli_set_show_unset(stack: Stack, tmp_path: Path) -> None:
    tenant = new_tenant()
    printed = quota(stack, tmp_path, "set", "--tenant", tenant, "--bytes", "10GiB",
                    "--artifacts", "100000")
    assert f"{tenant} env=*: bytes 0/{10 * 1024**3}, artifacts 0/100000" in printed
    quota(stack, tmp_path, "set", "--tenant", tenant, "--env", "stage", "--artifacts", "5")
    created(create_preview(stack, new_canvas(), tenant=tenant, env="staging"))
    shown = quota(stack, tmp_path, "show", "--tenant", tenant)
    assert f"{tenant} env=*: bytes {len(PNG)}/{10 * 1024**3}, artifacts 1/100000" in shown
    assert f"{tenant} env=staging: bytes {len(PNG)}/unlimited, artifacts 1/5" in shown
    # a limit not given keeps its value
    quota(stack, tmp_path, "set", "--tenant", tenant, "--bytes", "1MiB")
    assert f"{tenant} env=*: bytes {len(PNG)}/{1024**2}, artifacts 1/100000" in quota(
        stack, tmp_path, "show")
    assert "removed" in quota(stack, tmp_path, "unset", "--tenant", tenant)
    assert f"{tenant} env=*" not in quota(stack, tmp_path, "show", "--tenant", tenant)
    bad = run_cli("quota", "set", "--tenant", tenant, "--bytes", "lots", cwd=tmp_path,
                  env={"DATABASE_URL": stack.settings.database_url})
    assert bad.returncode == 2 and "is not a size" in bad.stderr


def test_over_bytes_quota_is_413_before_any_byte_is_stored(stack: Stack,
                                                           tmp_path: Path) -> None:
    tenant = new_tenant()
    canvas = new_canvas()
    quota(stack, tmp_path, "set", "--tenant", tenant, "--bytes", str(2 * len(PNG) + 10))
    created(create_preview(stack, canvas, tenant=tenant))
    created(create_preview(stack, canvas, tenant=tenant, rev=2))
    keys = blob_keys(stack)
    for query in ("?rev=3", "?rev=03"):  # lean path, then FastAPI's full path
        refused = stack.client.post(url(canvas, f"/preview{query}"), content=PNG,
                                    headers={**stack.headers(tenant), "Content-Type": "image/png"})
        error = assert_error(refused, 413, "quota.exceeded")
        assert str(2 * len(PNG) + 10) in error["message"]  # the limit
        assert str(2 * len(PNG)) in error["message"]  # the usage
    # no Content-Length (chunked): refused in the commit transaction, its blob discarded
    chunked = stack.client.post(url(canvas, "/preview?rev=4"), content=iter([PNG]),
                                headers={**stack.headers(tenant), "Content-Type": "image/png"})
    assert_error(chunked, 413, "quota.exceeded")
    assert blob_keys(stack) == keys
    assert counted(stack, tenant) == {"preview": (2 * len(PNG), 2)} == live_usage(stack, tenant)
    # another tenant and another env of a per-env quota are not limited
    created(create_preview(stack, canvas, tenant=new_tenant()))


def test_artifact_count_quota_per_env_and_delete_frees_room(stack: Stack,
                                                            tmp_path: Path) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    quota(stack, tmp_path, "set", "--tenant", tenant, "--env", "dev", "--artifacts", "3")
    first = created(create_audit(stack, canvas, tenant=tenant))
    created(create_replay(stack, canvas, tenant=tenant))
    created(create_preview(stack, canvas, tenant=tenant))
    for refused in (create_audit(stack, canvas, tenant=tenant),
                    create_replay(stack, canvas, tenant=tenant),
                    create_preview(stack, canvas, tenant=tenant)):
        message = assert_error(refused, 413, "quota.exceeded")["message"]
        assert "allows 3 artifacts and 3 are stored" in message
    created(create_audit(stack, canvas, tenant=tenant, env="prod"))  # another env
    deleted = stack.client.delete(url(canvas, f"/{first['id']}"), headers=stack.headers(tenant))
    assert deleted.status_code == 204
    created(create_audit(stack, canvas, tenant=tenant))
    assert counted(stack, tenant)["audit"][1] == 1
    assert usage(stack, tenant)["quotas"] == [{
        "env": "dev", "max_bytes": None, "max_artifacts": 3, "used_bytes": sum(
            size for size, _ in live_usage(stack, tenant, "dev").values()),
        "used_artifacts": 3}]


def test_usage_per_kind_follows_creates_deletes_and_purge(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    preview = created(create_preview(stack, canvas, tenant=tenant))
    replay = created(create_replay(stack, canvas, tenant=tenant))
    audit = created(create_audit(stack, canvas, tenant=tenant))
    created(create_audit(stack, new_canvas(), tenant=tenant))
    report = usage(stack, tenant)
    assert report["tenant_id"] == tenant and report["env"] == "dev"
    assert report["kinds"] == {
        "preview": {"bytes": preview["size_bytes"], "count": 1},
        "replay": {"bytes": replay["size_bytes"], "count": 1},
        "audit": {"bytes": 2 * audit["size_bytes"], "count": 2}}
    assert report["total"] == {"count": 4, "bytes": preview["size_bytes"] + replay["size_bytes"]
                               + 2 * audit["size_bytes"]}
    assert report["quotas"] == []
    assert counted(stack, tenant) == live_usage(stack, tenant)
    assert usage(stack, tenant, "prod")["total"] == {"bytes": 0, "count": 0}
    assert usage(stack, new_tenant())["total"] == {"bytes": 0, "count": 0}
    assert_error(stack.client.get("/usage"), 401)
    wiped = stack.client.delete(url(canvas), headers=stack.headers(tenant, role="admin"))
    assert wiped.json() == {"deleted": 3}
    assert counted(stack, tenant) == live_usage(stack, tenant) == {"audit": (audit["size_bytes"],
                                                                             1)}
    purge(stack.runtime.store, stack.runtime.engine, tenant, None, apply=True)
    assert usage(stack, tenant)["total"] == {"bytes": 0, "count": 0}


def test_a_retry_of_a_create_that_filled_the_quota_replays_it(stack: Stack,
                                                              tmp_path: Path) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    quota(stack, tmp_path, "set", "--tenant", tenant, "--artifacts", "1")
    first = create_preview(stack, canvas, tenant=tenant, **{"Idempotency_Key": "k1"})
    again = create_preview(stack, canvas, tenant=tenant, **{"Idempotency_Key": "k1"})
    assert again.status_code == 201 and again.json() == created(first)
    assert_error(create_preview(stack, canvas, tenant=tenant, **{"Idempotency_Key": "k2"}),
                 413, "quota.exceeded")


@contextlib.contextmanager
def served(stack: Stack, tmp_path: Path) -> Iterator[str]:
    with running_server(server_env(stack), tmp_path, workers=2) as server:
        yield server.url


@pytest.mark.parametrize("limit", ["artifacts", "bytes"])
def test_parallel_creates_near_the_limit_never_overshoot(stack: Stack, tmp_path: Path,
                                                         limit: str) -> None:
    """Two worker processes, 24 creates at once against a quota of 5: exactly 5 stored."""
    tenant, canvas = new_tenant(), new_canvas()
    allowed = 5
    quota(stack, tmp_path, "set", "--tenant", tenant,
          *(["--artifacts", str(allowed)] if limit == "artifacts"
            else ["--bytes", str(allowed * len(PNG))]))
    headers = {**stack.headers(tenant), "Content-Type": "image/png"}
    with served(stack, tmp_path) as base, httpx.Client(base_url=base, timeout=30) as client:

        def one(rev: int) -> int:
            query = f"?rev={rev}" if rev % 2 else f"?rev=0{rev}"  # both paths
            return client.post(url(canvas, f"/preview{query}"), content=PNG,
                               headers=headers).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(one, range(24)))
        assert sorted(set(statuses)) == [201, 413], statuses
        assert statuses.count(201) == allowed
        report = client.get("/usage", headers=headers).json()
    assert report["kinds"]["preview"] == {"bytes": allowed * len(PNG), "count": allowed}
    assert live_usage(stack, tenant) == {"preview": (allowed * len(PNG), allowed)}
    previews = [k for k in blob_keys(stack) if f"/{tenant}/" in k]
    assert len(previews) == allowed


def test_usage_is_documented(stack: Stack) -> None:
    schema = orjson.loads(stack.client.get("/openapi.json").content)
    assert "/usage" in schema["paths"]
