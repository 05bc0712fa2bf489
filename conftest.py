"""Test fixtures shared by every domain's tests.

Backends are real: SQLite files, a local directory, PostgreSQL on
127.0.0.1:5432 (or TEST_DATABASE_URL) in a throwaway database, and moto's
S3 server on a loopback port spoken to through boto3. The contract tests run
once per stack: `local-sqlite` and `s3-postgres`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from engines.app import build_runtime, create_app
from engines.auth.tokens import issue_token
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade
from engines.runtime import Runtime

SIGNING_KEY = "test-signing-key-" + "k" * 32
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TEST_HOST = "testserver"
"""The Host header of TestClient requests: the one host signed URLs may name in tests."""


def _unavailable(message: str) -> None:
    """In CI a missing backend is a failure; on a laptop it is a skip with a hint."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    import sqlalchemy

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        _unavailable(f"PostgreSQL not reachable at {url} ({type(exc).__name__}); point "
                     "TEST_DATABASE_URL at a server (postgresql+psycopg://user@host:port/db)")
    finally:
        engine.dispose()
    return url


def create_pg_database(admin_url: str) -> str:
    """A fresh, empty database; returns its URL."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"engines_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def migrate(url: str) -> None:
    """Migrate the database at `url` to head, leaving no connection open."""
    engine = build_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()


@contextlib.contextmanager
def migrated_pg_database(admin_url: str) -> Iterator[str]:
    """A fresh database migrated to head, dropped afterwards; yields its URL."""
    url = create_pg_database(admin_url)
    migrate(url)
    try:
        yield url
    finally:
        drop_pg_database(admin_url, url)


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """One migrated throwaway database for the session."""
    with migrated_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in-process, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"canvas-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file copied per test: migrations run once, not per test."""
    path = tmp_path_factory.mktemp("template") / "engines.db"
    migrate(f"sqlite:///{path}")
    return path


@dataclass
class Stack:
    """A running app on one backend combination, plus ways to build tokens."""

    name: str
    settings: Settings
    runtime: Runtime
    client: TestClient
    extra: dict[str, object] = field(default_factory=dict)

    def token(self, tenant: str | list[str] = "t_acme", *, role: str = "member",
              sub: str = "u_ana", ttl: int = 3600) -> str:
        tenants = [tenant] if isinstance(tenant, str) else tenant
        return issue_token(self.settings, sub=sub, tenants=tenants, role=role, ttl=ttl)

    def headers(self, tenant: str = "t_acme", env: str = "dev", *, role: str = "member",
                sub: str = "u_ana", **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(tenant, role=role, sub=sub)}",
                   "X-Tenant-Id": tenant, "X-Env": env, "X-Project-Id": "p_main"}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return headers


def local_settings(tmp_path: Path, template: Path, **overrides: object) -> Settings:
    db = tmp_path / "engines.db"
    shutil.copy(template, db)
    values: dict[str, object] = {
        "database_url": f"sqlite:///{db}", "media_local_root": tmp_path / "media",
        "auth_jwt_signing": SIGNING_KEY, "dev_key_file": tmp_path / "dev-key",
        "allowed_hosts": [TEST_HOST],
    }
    values.update(overrides)
    return Settings(**values)


def s3_pg_settings(tmp_path: Path, endpoint: str, bucket: str, db_url: str,
                   **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url, "raw_bucket": bucket, "aws_endpoint_url_s3": endpoint,
        "auth_jwt_signing": SIGNING_KEY, "dev_key_file": tmp_path / "dev-key",
        "s3_max_attempts": 2, "s3_connect_timeout": 2.0, "s3_read_timeout": 10.0,
        "allowed_hosts": [TEST_HOST],
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path):
    """Factory: build a Stack for a named backend combination with setting overrides."""
    built: list[Stack] = []

    def build(name: str = "local-sqlite", *, nexus=None, **overrides: object) -> Stack:
        if name == "local-sqlite":
            settings = local_settings(tmp_path, sqlite_template, **overrides)
        else:
            endpoint = request.getfixturevalue("s3_endpoint")
            db_url = request.getfixturevalue("pg_url")
            bucket = overrides.pop("raw_bucket", None) or make_bucket(endpoint)
            settings = s3_pg_settings(tmp_path, endpoint, str(bucket), db_url, **overrides)
        runtime = build_runtime(settings, nexus=nexus)
        client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
        stack = Stack(name=name, settings=settings, runtime=runtime, client=client)
        built.append(stack)
        return stack

    yield build
    for stack in built:
        stack.client.close()
        stack.runtime.engine.dispose()


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def stack(request: pytest.FixtureRequest, make_stack) -> Stack:
    """The contract fixture: every test using it runs on both backend combinations."""
    return make_stack(request.param)


@pytest.fixture
def local(make_stack) -> Stack:
    """The embedded default only, for tests about logic rather than backends."""
    return make_stack("local-sqlite")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x11" * 600
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x22" * 300
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>'
HTML = b"<!doctype html><html><body><h1>canvas</h1></body></html>"


def new_canvas() -> str:
    return f"c_{uuid.uuid4().hex[:12]}"
