"""A deployment that is wrong says so, and never looks ready.

Each test starts the real `engines serve` (or `engines doctor`) wrong on
purpose, with only env vars, on the stacks the mistake applies to: an
unmigrated schema, no signing key outside the embedded default, a missing
bucket, no S3 credentials, an unreachable endpoint, a `postgres://` URL, a
port already taken, and a database that goes away under the webhook worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from conftest import (
    SIGNING_KEY,
    create_pg_database,
    drop_pg_database,
    make_bucket,
    migrated_pg_database,
)
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import alembic_config, upgrade
from tests._server import free_port, running_server
from tests.test_cli import ENGINES, _head, check_line, output, run_cli

URL_KEY = "url-signing-key-" + "q" * 32
HEAD = _head()
BEFORE_HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(
    HEAD).down_revision
NO_AWS_CREDENTIALS = {"AWS_EC2_METADATA_DISABLED": "true",
                      "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
                      "AWS_CONFIG_FILE": "/nonexistent/config"}
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def serve_refused(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`engines serve` that must exit by itself; a server that starts instead fails the test."""
    try:
        result = run_cli("serve", "--port", str(free_port()), "--workers", "1", cwd=tmp_path,
                         env=env, timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail("engines serve started instead of refusing", pytrace=False)
    assert result.returncode != 0, output(result)
    assert "Traceback" not in output(result), output(result)
    assert "serving on" not in result.stdout, "no banner for a server that does not start"
    return result


def refusals(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stderr.strip().splitlines()


@pytest.fixture
def fresh_pg(pg_admin_url: str) -> Iterator[str]:
    url = create_pg_database(pg_admin_url)
    yield url
    drop_pg_database(pg_admin_url, url)


@pytest.fixture(params=["sqlite", "postgres"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """An empty database with auto-migrate off, on each engine."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'engines.db'}"
    else:
        url = request.getfixturevalue("fresh_pg")
    return {"DATABASE_URL": url, "AUTO_MIGRATE": "false", "AUTH_JWT_SIGNING": SIGNING_KEY,
            "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}


def migrate(url: str) -> None:
    engine = build_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()


# ---- 1. the schema revision is part of readiness ----------------------------


def test_serve_refuses_an_unmigrated_database_in_one_line(tmp_path: Path,
                                                          unmigrated: dict[str, str]) -> None:
    result = serve_refused(tmp_path, unmigrated)
    [line] = refusals(result)
    assert "empty database, no schema" in line and f"expected {HEAD}" in line
    assert "`engines migrate`" in line

    doctor = run_cli("doctor", cwd=tmp_path, env=unmigrated)
    assert doctor.returncode == 1
    assert doctor.stdout.splitlines()[0] == "doctor: some checks FAILED", "verdict first"
    assert check_line(doctor.stdout, "database") == (
        f"FAIL  database: empty database, no schema, expected {HEAD}: run `engines migrate`")
    assert "None" not in check_line(doctor.stdout, "database")

    migrated = run_cli("migrate", cwd=tmp_path, env=unmigrated)
    assert migrated.returncode == 0, output(migrated)
    with running_server({**unmigrated, "ENGINES_HOME": str(tmp_path / "home")}, tmp_path):
        pass  # starts once migrated


def downgrade(url: str, revision: str) -> None:
    engine = build_engine(Settings(database_url=url))
    config = alembic_config(url)
    with engine.connect() as conn:  # each migration runs in a transaction of its own
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()
    engine.dispose()


def _wait_for_readyz(url: str, wanted_status: int, timeout: float = 20) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/readyz", timeout=5)
        if response.status_code == wanted_status or time.monotonic() > deadline:
            assert response.status_code == wanted_status, response.text
            return dict(response.json())
        time.sleep(0.5)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_readyz_is_503_when_the_schema_changes_under_a_running_server(
        tmp_path: Path, request: pytest.FixtureRequest, engine: str) -> None:
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            url = f"sqlite:///{tmp_path / 'engines.db'}"
            migrate(url)
        else:
            url = stack.enter_context(migrated_pg_database(
                request.getfixturevalue("pg_admin_url")))
        env = {"DATABASE_URL": url, "AUTO_MIGRATE": "false", "AUTH_JWT_SIGNING": SIGNING_KEY,
               "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "ENGINES_HOME": str(tmp_path)}
        server = stack.enter_context(running_server(env, tmp_path))
        assert _wait_for_readyz(server.url, 200)["database"] == "ok"

        downgrade(url, BEFORE_HEAD)
        body = _wait_for_readyz(server.url, 503)
        assert body == {"status": "unavailable", "storage": "ok",
                        "database": f"schema at {BEFORE_HEAD}, expected {HEAD}"}

        migrate(url)
        assert _wait_for_readyz(server.url, 200)["database"] == "ok"


# ---- 2. a dev key only on the embedded default -------------------------------


@pytest.fixture(params=["postgres+local", "sqlite+s3"])
def production_shaped(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """PostgreSQL or S3 configured, migrated and reachable, and no AUTH_JWT_SIGNING."""
    if request.param == "postgres+local":
        return {"DATABASE_URL": request.getfixturevalue("pg_url"),
                "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}
    url = f"sqlite:///{tmp_path / 'engines.db'}"
    migrate(url)
    endpoint = request.getfixturevalue("s3_endpoint")
    return {"DATABASE_URL": url, "RAW_BUCKET": make_bucket(endpoint),
            "AWS_ENDPOINT_URL_S3": endpoint, **AWS_TEST_CREDENTIALS}


def test_no_signing_key_outside_the_embedded_default_refuses_and_fails_doctor(
        tmp_path: Path, production_shaped: dict[str, str]) -> None:
    dev_key = tmp_path / "engines-home" / "dev-signing-key"
    result = serve_refused(tmp_path, production_shaped)
    [line] = refusals(result)
    assert "AUTH_JWT_SIGNING is not set" in line and "set AUTH_JWT_SIGNING" in line
    assert "Bearer" not in output(result), "no owner token printed"
    assert not dev_key.exists(), "no dev key made"

    dev_key.parent.mkdir(parents=True)
    dev_key.write_text("left-over-from-an-embedded-run-" + "d" * 20)  # a dev key is not enough
    doctor = run_cli("doctor", cwd=tmp_path, env=production_shaped)
    assert doctor.returncode == 1, output(doctor)
    line = check_line(doctor.stdout, "signing key")
    assert line.startswith("FAIL  signing key: AUTH_JWT_SIGNING is not set")
    assert "set AUTH_JWT_SIGNING" in line and "creates it" not in line
    assert "signing key: none: AUTH_JWT_SIGNING unset" in doctor.stdout
    assert check_line(doctor.stdout, "signed URLs").startswith(
        "FAIL  signed URLs: URL_SIGNING_KEY is not set")

    keyed = {**production_shaped, "AUTH_JWT_SIGNING": SIGNING_KEY, "URL_SIGNING_KEY": URL_KEY}
    doctor = run_cli("doctor", cwd=tmp_path, env=keyed)
    assert doctor.returncode == 0, output(doctor)
    assert doctor.stdout.splitlines()[0] == "doctor: all checks passed"


def test_the_embedded_default_still_runs_on_a_dev_key(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "ENGINES_HOME": str(tmp_path / "home")}
    with running_server(env, tmp_path) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert (tmp_path / "home" / "dev-signing-key").is_file()
    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    assert doctor.returncode == 0, output(doctor)
    assert check_line(doctor.stdout, "signed URLs").startswith("ok    signed URLs: key derived")


# ---- 3. the bucket: missing, no credentials, unreachable ---------------------


@pytest.fixture
def s3_env(tmp_path: Path, pg_url: str, s3_endpoint: str) -> dict[str, str]:
    """PostgreSQL (migrated) and S3, every key given: only the bucket settings vary."""
    return {"DATABASE_URL": pg_url, "AUTH_JWT_SIGNING": SIGNING_KEY, "URL_SIGNING_KEY": URL_KEY,
            "RAW_BUCKET": make_bucket(s3_endpoint), "AWS_ENDPOINT_URL_S3": s3_endpoint,
            "S3_MAX_ATTEMPTS": "1", "S3_CONNECT_TIMEOUT": "1", **AWS_TEST_CREDENTIALS}


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize(("change", "serve_says", "doctor_says"), [
    ({"RAW_BUCKET": "canvas-never-created"}, "no such bucket: create it",
     "StorageUnavailable: S3 bucket s3://canvas-never-created at "),
    ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", **NO_AWS_CREDENTIALS},
     "no credentials (Unable to locate credentials)", "no credentials"),
    ({"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1"}, "at http://127.0.0.1:1 unreachable",
     "at http://127.0.0.1:1 unreachable"),
], ids=["no-such-bucket", "no-credentials", "unreachable"])
def test_serve_checks_the_bucket_and_doctor_names_the_cause(
        tmp_path: Path, s3_env: dict[str, str], change: dict[str, str], serve_says: str,
        doctor_says: str) -> None:
    env = {**s3_env, **change}
    env = {name: value for name, value in env.items() if value}
    [line] = refusals(serve_refused(tmp_path, env))
    assert line.startswith("engines serve: refusing to start: S3 bucket s3://"), line
    assert serve_says in line

    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    assert doctor.returncode == 1
    storage = check_line(doctor.stdout, "storage")
    assert storage.startswith("FAIL  storage: StorageUnavailable: ") and doctor_says in storage
    for other in ("no such bucket", "no credentials", "unreachable"):
        assert (other in storage) == (other in serve_says), storage


@pytest.mark.postgres
@pytest.mark.s3
def test_readyz_says_no_such_bucket_when_the_bucket_goes_away(
        tmp_path: Path, s3_env: dict[str, str]) -> None:
    with running_server(s3_env, tmp_path) as server:
        assert _wait_for_readyz(server.url, 200)["storage"] == "ok"
        boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"],
                     region_name="us-east-1").delete_bucket(Bucket=s3_env["RAW_BUCKET"])
        body = _wait_for_readyz(server.url, 503)
    assert body == {"status": "unavailable", "database": "ok", "storage": "no such bucket"}


@pytest.mark.postgres
@pytest.mark.s3
def test_readyz_tells_no_credentials_from_an_unreachable_endpoint(
        make_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session
    from fastapi.testclient import TestClient

    from engines.app import build_runtime, create_app
    from engines.storage.s3 import S3BlobStore

    unreachable = make_stack("s3-postgres", aws_endpoint_url_s3="http://127.0.0.1:1",
                             s3_max_attempts=1, s3_connect_timeout=1.0)
    assert unreachable.client.get("/readyz").json() == {
        "status": "unavailable", "database": "ok", "storage": "unreachable"}

    stack = make_stack("s3-postgres")
    for name in AWS_TEST_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name, value in NO_AWS_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    anonymous = botocore.session.Session().create_client(
        "s3", endpoint_url=stack.settings.aws_endpoint_url_s3, region_name="us-east-1")
    runtime = build_runtime(stack.settings, store=S3BlobStore(stack.settings, client=anonymous))
    response = TestClient(create_app(runtime=runtime)).get("/readyz")
    runtime.engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok",
                               "storage": "no credentials"}


# ---- 4. an outage is logged once, not once a round ---------------------------


def _recreate(admin_url: str, url: str) -> None:
    """The dropped database back, empty, then migrated: the outage is over."""
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{make_url(url).database}"')
    admin.dispose()
    migrate(url)


@pytest.mark.postgres
def test_the_webhook_worker_logs_a_database_outage_once_and_its_end(
        tmp_path: Path, pg_admin_url: str) -> None:
    url = create_pg_database(pg_admin_url)
    migrate(url)
    env = {"DATABASE_URL": url, "AUTH_JWT_SIGNING": SIGNING_KEY, "URL_SIGNING_KEY": URL_KEY,
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "WEBHOOK_POLL_SECONDS": "0.1"}
    try:
        with running_server(env, tmp_path) as server:
            offset = server.log.stat().st_size
            drop_pg_database(pg_admin_url, url)  # every round now fails to connect
            time.sleep(5)
            _recreate(pg_admin_url, url)
            deadline = time.monotonic() + 15
            while not any("webhooks: delivery round" in line and "recovered after" in line
                          for line in server.log.read_text()[offset:].splitlines()):
                assert time.monotonic() < deadline, server.log.read_text()[offset:]
                time.sleep(0.2)
            log = server.log.read_text()[offset:]
    finally:
        drop_pg_database(pg_admin_url, url)
    rounds = [line for line in log.splitlines() if "webhooks: delivery round" in line]
    assert len(rounds) == 2, "\n".join(rounds)
    # the drop either refuses the next connect (OperationalError) or ends one mid-statement
    # (AdminShutdown, psycopg's subclass of it): either way the driver's error is named
    named = r"delivery round failed \((OperationalError|AdminShutdown): "
    assert re.search(named, rounds[0]), rounds[0]
    assert "recovered after" in rounds[1] and "failed rounds" in rounds[1]
    webhook_lines = [line for line in log.splitlines() if '"logger":"engines.webhooks"' in line]
    assert sum("Traceback" in line for line in webhook_lines) == 1, "one traceback, the first"
    # every other loop that reads the database (the events hub) logs its outage once too
    assert sum("Traceback" in line for line in log.splitlines()) <= 3
    assert len(log) < 20_000, f"{len(log)} bytes of log for a 5 s outage"


def test_an_outage_is_counted_at_most_once_a_minute() -> None:
    import logging

    from engines.common.outage import OutageLog

    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.outage")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        outage = OutageLog(logger, "loop", clock=lambda: now[0])
        for _ in range(150):  # 150 rounds, one a second
            outage.failed(ConnectionError("refused"))
            now[0] += 1
        outage.succeeded()
        outage.succeeded()  # nothing more to say
    finally:
        logger.removeHandler(handler)
    messages = [record.getMessage() for record in records]
    assert messages == [
        "loop failed (ConnectionError: refused); retrying quietly, a count follows every 60 s",
        "loop still failing: 61 rounds in 60 s (ConnectionError: refused)",
        "loop still failing: 121 rounds in 120 s (ConnectionError: refused)",
        "loop recovered after 150 failed rounds in 150 s"]
    assert records[0].exc_info and not any(r.exc_info for r in records[1:])


# ---- 5. postgres:// is PostgreSQL --------------------------------------------


@pytest.mark.postgres
def test_a_postgres_scheme_url_is_accepted(tmp_path: Path, pg_url: str) -> None:
    short = make_url(pg_url).set(drivername="postgres").render_as_string(hide_password=False)
    assert short.startswith("postgres://")
    env = {"DATABASE_URL": short, "AUTH_JWT_SIGNING": SIGNING_KEY, "URL_SIGNING_KEY": URL_KEY,
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}
    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    assert doctor.returncode == 0, output(doctor)
    assert check_line(doctor.stdout, "database") == f"ok    database: reachable, migrated to {HEAD}"
    with running_server(env, tmp_path) as server:
        assert httpx.get(f"{server.url}/readyz").json()["database"] == "ok"


# ---- 6. the banner once the socket is bound; a taken port is one line --------


def test_a_taken_port_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--workers", "1", cwd=tmp_path,
                         env={"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}"},
                         timeout=45)
    assert result.returncode == 1, output(result)
    assert result.stderr.strip().splitlines() == [
        f"engines serve: refusing to start: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"]
    assert "serving on" not in result.stdout and "curl" not in result.stdout


def test_the_banner_comes_once_the_port_takes_connections(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ENGINES_HOME": str(tmp_path), "LOG_FORMAT": "text"}
    process = subprocess.Popen([str(ENGINES), "serve", "--port", str(port), "--workers", "2"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        banner = iter(process.stdout)
        assert any("serving on" in line for line in banner), "no banner"
        # at once, before any worker has started: the connection is accepted by the kernel
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert any("curl" in line for line in banner), "the dev token's curl line follows"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stdout.close()  # type: ignore[union-attr]
