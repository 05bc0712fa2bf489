"""Real `engines serve` processes on both stacks, for the client and CLI tests.

`served_fixture()` makes a module-scoped fixture, parametrised over
local+SQLite and S3(moto server)+PostgreSQL: one server per stack per test
module, which each test talks to only through `engines.client` or the
`engines artifacts` command. A `Served` can be restarted on its port (the
data stays), for the tests where the server goes away under a client.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import SIGNING_KEY, make_bucket, migrated_pg_database
from engines.auth.tokens import issue_token
from engines.client import ArtifactClient, AsyncArtifactClient
from engines.config import Settings
from tests._server import Server, running_server

STACKS = ["local-sqlite", pytest.param("s3-postgres", marks=[pytest.mark.postgres,
                                                           pytest.mark.s3])]
PROJECT = "p_web"


def new_tenant() -> str:
    """A tenant no other test uses: its event feed and its listings are the test's own."""
    return f"t_cl_{uuid.uuid4().hex[:10]}"


def token(tenant: str = "t_acme", role: str = "member") -> str:
    return issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=[tenant],
                       role=role, ttl=3600)


@dataclass
class Served:
    name: str
    env: dict[str, str]
    workdir: Path
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    server: Server | None = None

    def start(self, port: int | None = None) -> Served:
        self.server = self._stack.enter_context(running_server(self.env, self.workdir,
                                                               port=port))
        return self

    def stop(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def client(self, tenant: str = "t_acme", role: str = "member", *, url: str | None = None,
               **options: Any) -> ArtifactClient:
        return ArtifactClient(url or self.url, token(tenant, role), tenant, "dev", PROJECT,
                              **options)

    def aclient(self, tenant: str = "t_acme", role: str = "member", *, url: str | None = None,
                **options: Any) -> AsyncArtifactClient:
        return AsyncArtifactClient(url or self.url, token(tenant, role), tenant, "dev", PROJECT,
                                   **options)


@contextlib.contextmanager
def _stack_env(request: pytest.FixtureRequest, workdir: Path) -> Iterator[dict[str, str]]:
    env = {"AUTH_JWT_SIGNING": SIGNING_KEY, "EVENTS_HEARTBEAT_SECONDS": "1",
           "ALLOWED_HOSTS": "127.0.0.1,localhost", "URL_SIGNING_KEY": "url-key-" + "c" * 32}
    if request.param == "local-sqlite":
        yield {**env, "DATABASE_URL": f"sqlite:///{workdir / 'engines.db'}",
               "MEDIA_LOCAL_ROOT": str(workdir / "media"), "RAW_BUCKET": ""}
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    with migrated_pg_database(request.getfixturevalue("pg_admin_url")) as url:
        yield {**env, "DATABASE_URL": url, "AUTO_MIGRATE": "0",
               "RAW_BUCKET": make_bucket(endpoint), "AWS_ENDPOINT_URL_S3": endpoint,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def served_fixture():
    """A module-scoped `served` fixture: one running server per stack."""

    @pytest.fixture(scope="module", params=STACKS)
    def served(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
        workdir = tmp_path_factory.mktemp(f"client-{request.param}")
        with _stack_env(request, workdir) as env:
            running = Served(request.param, env, workdir).start()
            try:
                yield running
            finally:
                running.stop()

    return served
