"""The lean path of the hot routes answers exactly as FastAPI's full path does.

A plainly valid request takes the lean path; anything else (a leading zero,
an extra query parameter) falls back to the full path. Both must agree, and
every rule (auth, roles, validation) must hold on both.
"""

from __future__ import annotations

import os

from conftest import PNG, Stack
from engines.canvas_artifacts.tests.helpers import assert_error, created, new_tenant, url
from engines.cli import default_workers


def _post(stack: Stack, tenant: str, query: str, **headers: str):
    return stack.client.post(url("c_lean", f"/preview{query}"), content=PNG,
                             headers={**stack.headers(tenant), "Content-Type": "image/png",
                                      **headers})


def test_lean_and_full_paths_agree(stack: Stack) -> None:
    tenant = new_tenant()
    lean = created(_post(stack, tenant, "?rev=7"))
    full = created(_post(stack, tenant, "?rev=007"))  # not plain: FastAPI parses it
    assert lean["rev"] == full["rev"] == 7
    assert created(_post(stack, tenant, f"?rev={2**53}"))["rev"] == 2**53
    assert_error(_post(stack, tenant, f"?rev={2**53 + 1}"), 422)
    assert_error(_post(stack, tenant, "?rev=-1"), 422)
    assert_error(_post(stack, tenant, ""), 422)

    headers = stack.headers(tenant)
    path = url("c_lean", f"/{lean['id']}")
    plain = stack.client.get(f"{path}/content", headers=headers)
    fallback = stack.client.get(f"{path}/content?disposition=attachment", headers=headers)
    assert plain.status_code == fallback.status_code == 200
    assert plain.content == fallback.content == PNG
    drop = {"x-request-id", "x-correlation-id", "traceparent", "date"}
    assert ({k: v for k, v in plain.headers.items() if k not in drop}
            == {k: v for k, v in fallback.headers.items() if k not in drop})
    assert stack.client.get(path, headers=headers).json() == lean


def test_rules_hold_on_the_lean_path(stack: Stack) -> None:
    tenant = new_tenant()
    record = created(_post(stack, tenant, "?rev=1"))
    path = url("c_lean", f"/{record['id']}")
    assert_error(stack.client.get(path), 401)
    assert_error(stack.client.post(url("c_lean", "/preview?rev=1"), content=PNG,
                                   headers={"Content-Type": "image/png"}), 401)
    assert_error(_post(stack, tenant, "?rev=1", Authorization=f"Bearer "
                       f"{stack.token(tenant, role='viewer')}"), 403, "auth.role_forbidden")
    other = new_tenant()
    assert_error(stack.client.get(path, headers=stack.headers(other)), 404)
    assert_error(stack.client.get(f"{path}/content", headers=stack.headers(other)), 404)
    assert_error(stack.client.get(url("c_lean", "/..bad/content"),
                                  headers=stack.headers(tenant)), 422)


def test_serve_defaults_to_one_worker_per_core() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))
