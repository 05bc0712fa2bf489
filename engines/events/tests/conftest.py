"""Fixtures for the events tests: the app served for real, on both stacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from conftest import Stack
from engines.app import create_app
from engines.events.tests.sse_client import SseReader, readers, serve_in_thread


@dataclass
class Live:
    """A stack whose app is also served by uvicorn at `url` (lifespan entered)."""

    stack: Stack
    url: str
    opened: list[SseReader]

    def subscribe(self, path: str = "/artifacts/events", *, tenant: str = "t_acme",
                  env: str = "dev", role: str = "viewer", **headers: str) -> SseReader:
        reader = SseReader(self.url + path, {**self.stack.headers(tenant, env, role=role),
                                             **headers}).start()
        self.opened.append(reader)
        return reader


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def make_live(request: pytest.FixtureRequest, make_stack) -> Iterator[Callable[..., Live]]:
    """Factory: a Live stack on each backend, with setting overrides."""
    with contextlib.ExitStack() as stack_of_servers, readers() as opened:

        def build(**overrides: object) -> Live:
            overrides.setdefault("webhooks_enabled", False)
            overrides.setdefault("events_heartbeat_seconds", 0.5)
            stack = make_stack(request.param, **overrides)
            url = stack_of_servers.enter_context(serve_in_thread(create_app(
                runtime=stack.runtime)))
            return Live(stack=stack, url=url, opened=opened)

        yield build


@pytest.fixture
def live(make_live: Callable[..., Live]) -> Live:
    return make_live()
