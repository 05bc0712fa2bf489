"""Fuzz every operation of the published OpenAPI schema against the running app.

schemathesis generates valid and invalid requests from /openapi.json and
sends them, with a valid token and routing headers, to the app in process.
No response may be a 5xx, and every response must be one the schema
declares: its status code, its content type and, for JSON, its body shape.
A client generated from the schema can then trust it, errors included.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, local: Stack):  # type: ignore[no-untyped-def]
    # schemathesis 4.32's lazy loader relabels subtests through `node._nodeid`,
    # which pytest 9 no longer has; give it one to read.
    request.node._nodeid = request.node.nodeid
    return schemathesis.openapi.from_asgi("/openapi.json", local.client.app)


@pytest.fixture
def auth_headers(local: Stack) -> dict[str, str]:
    return local.headers("t_acme", "dev")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case, auth_headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    import time; t=time.perf_counter(); case.call_and_validate(headers=auth_headers, checks=CHECKS); open("/tmp/fuzzlog","a").write(f"{case.operation.label}\t{case.meta.phase.name if case.meta else None}\t{time.perf_counter()-t:.4f}\n")
