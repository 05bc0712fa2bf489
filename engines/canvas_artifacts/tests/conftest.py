"""Fixtures for canvas artifact tests that build their own stacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from conftest import Stack
from engines.app import build_runtime, create_app
from engines.lineage.nexus.backends.base import NexusBackend


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def stack_name(request: pytest.FixtureRequest) -> str:
    """Both backend names, for tests that need make_stack with overrides or a custom Nexus."""
    return request.param


@pytest.fixture
def twin() -> Iterator[Callable[..., Stack]]:
    """A second app on the very same database and blob store as a given stack.

    Lets a test fail a request with one Nexus backend and check or retry it
    with another, against the same data (make_stack would start a new one).
    """
    built: list[Stack] = []

    def build(stack: Stack, *, nexus: NexusBackend | None = None) -> Stack:
        runtime = build_runtime(stack.settings, nexus=nexus)
        client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
        other = Stack(name=stack.name, settings=stack.settings, runtime=runtime, client=client)
        built.append(other)
        return other

    yield build
    for other in built:
        other.client.close()
        other.runtime.engine.dispose()
