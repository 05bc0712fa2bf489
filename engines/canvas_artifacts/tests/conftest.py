"""Fixtures for canvas artifact tests that build their own stacks."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def stack_name(request: pytest.FixtureRequest) -> str:
    """Both backend names, for tests that need make_stack with overrides or a custom Nexus."""
    return request.param
