"""The real `engines` command, run as a subprocess with only env vars to configure it.

Covers what a new user types from the README: `engines doctor` passing and
failing as it should on both backend combinations (secrets never printed),
`engines migrate` on a fresh PostgreSQL database, and `engines token`
producing a token the API accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy.engine import make_url

from conftest import PNG, SIGNING_KEY, create_pg_database, drop_pg_database, make_bucket, new_canvas
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import alembic_config, upgrade
from tests._server import running_server

ENGINES = Path(sys.executable).with_name("engines")
REPO = Path(__file__).resolve().parents[1]
SECRET_SIGNING = "doctor-must-never-print-this-" + "z" * 24
DB_PASSWORD = "pw-must-be-masked-7731"
SECRET_URL_KEY = "url-key-must-never-be-printed-" + "u" * 20
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def run_cli(*args: str, cwd: Path, env: dict[str, str],
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `engines ARGS` with a clean environment: only what the test sets, plus PATH.

    ENGINES_HOME defaults to a fresh directory under cwd, never the checkout's var/.
    """
    return subprocess.run([str(ENGINES), *args], cwd=cwd, env=clean_env(cwd, env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def clean_env(cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment run_cli gives `engines`: only what the test sets, plus PATH."""
    clean = {k: v for k, v in os.environ.items() if k in _INHERITED}
    clean["ENGINES_HOME"] = str(cwd / "engines-home")
    clean.update(env)
    return clean


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def assert_no_secrets(text: str) -> None:
    assert SECRET_SIGNING not in text
    assert DB_PASSWORD not in text
    assert SECRET_URL_KEY not in text


def check_line(text: str, name: str) -> str:
    """The doctor's one pass/fail line for a check."""
    [line] = [ln for ln in text.splitlines() if ln.split(":", 1)[0].split(None, 1)[-1] == name
              and ln.startswith(("ok ", "FAIL "))]
    return line


def with_password(url: str) -> str:
    """The same database, with a password in the URL (trust auth ignores it)."""
    return make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def fresh_pg(pg_admin_url: str) -> Iterator[str]:
    url = create_pg_database(pg_admin_url)
    yield url
    drop_pg_database(pg_admin_url, url)


def test_engines_executable_is_installed() -> None:
    assert ENGINES.is_file(), f"{ENGINES} missing: `pip install -e .` installs the command"


def test_doctor_on_sqlite_and_local_dir(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}

    broken = run_cli("doctor", cwd=tmp_path, env=env)  # unmigrated and no signing key
    assert broken.returncode == 1, output(broken)
    assert check_line(broken.stdout, "storage").startswith("ok")
    assert check_line(broken.stdout, "database").startswith("FAIL")
    assert "engines migrate" in check_line(broken.stdout, "database")
    assert check_line(broken.stdout, "signing key").startswith("FAIL")
    assert f"there is no dev key at {tmp_path / 'engines-home' / 'dev-signing-key'}" in \
        check_line(broken.stdout, "signing key")
    assert (f"signing key: dev key in use: {tmp_path / 'engines-home' / 'dev-signing-key'}"
            in broken.stdout)
    assert "doctor: some checks FAILED" in broken.stdout

    env["AUTH_JWT_SIGNING"] = SECRET_SIGNING
    migrated = run_cli("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, output(migrated)

    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    text = output(doctor)
    assert doctor.returncode == 0, text
    assert check_line(text, "storage").startswith("ok")
    assert f"local directory {(tmp_path / 'media').resolve()}" in check_line(text, "storage")
    assert check_line(text, "database") == f"ok    database: reachable, migrated to {_head()}"
    assert check_line(text, "signing key").startswith("ok")
    assert "doctor: all checks passed" in text
    assert "  AUTH_JWT_SIGNING=***\n" in text
    assert f"  DATABASE_URL={env['DATABASE_URL']}\n" in text
    assert "  RAW_BUCKET=  # unset" in text and "  MAX_PREVIEW_BYTES=26214400  # default" in text
    assert "auto-migrate on (AUTO_MIGRATE unset: on for SQLite, off otherwise)" in text
    assert "signing key: AUTH_JWT_SIGNING (dev key not used)" in text
    assert_no_secrets(text)
    assert not list((tmp_path / "media").rglob("*probe*")), "the probe object is cleaned up"


@pytest.mark.postgres
@pytest.mark.s3
def test_migrate_then_doctor_on_postgres_and_s3(tmp_path: Path, fresh_pg: str,
                                                s3_endpoint: str) -> None:
    bucket = make_bucket(s3_endpoint)
    env = {"DATABASE_URL": with_password(fresh_pg), "RAW_BUCKET": bucket,
           "AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AUTH_JWT_SIGNING": SECRET_SIGNING}

    unmigrated = run_cli("doctor", cwd=tmp_path, env=env)
    assert unmigrated.returncode == 1, output(unmigrated)
    assert check_line(unmigrated.stdout, "storage").startswith("ok")
    assert check_line(unmigrated.stdout, "database").startswith("FAIL")
    assert_no_secrets(output(unmigrated))

    migrated = run_cli("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, output(migrated)
    assert f"at revision {_head()} (head {_head()})" in migrated.stdout
    assert "postgres:***@127.0.0.1" in migrated.stdout
    assert_no_secrets(output(migrated))

    without_url_key = run_cli("doctor", cwd=tmp_path, env=env)
    assert without_url_key.returncode == 1, output(without_url_key)
    assert check_line(without_url_key.stdout, "signed URLs").startswith(
        "FAIL  signed URLs: URL_SIGNING_KEY is not set")

    env["URL_SIGNING_KEY"] = SECRET_URL_KEY
    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    text = output(doctor)
    assert doctor.returncode == 0, text
    assert check_line(text, "signed URLs") == "ok    signed URLs: URL_SIGNING_KEY is set"
    assert "  URL_SIGNING_KEY=***\n" in text
    assert f"S3 bucket s3://{bucket} at {s3_endpoint} is writable and readable" in check_line(
        text, "storage")
    assert check_line(text, "database") == f"ok    database: reachable, migrated to {_head()}"
    assert check_line(text, "signing key").startswith("ok")
    assert f"  RAW_BUCKET={bucket}\n" in text
    assert f"blobs in S3 bucket RAW_BUCKET={bucket}" in text
    assert "  DATABASE_URL=postgresql+psycopg://postgres:***@127.0.0.1" in text
    assert "auto-migrate off (AUTO_MIGRATE unset: on for SQLite, off otherwise)" in text
    assert_no_secrets(text)


@pytest.mark.postgres
def test_doctor_fails_fast_on_a_wrong_database_port(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:1/engines",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "AUTH_JWT_SIGNING": SECRET_SIGNING}

    started = time.monotonic()
    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started

    text = output(doctor)
    assert doctor.returncode == 1, text
    assert check_line(text, "database").startswith("FAIL  database: OperationalError")
    assert check_line(text, "storage").startswith("ok")
    assert check_line(text, "signing key").startswith("ok")
    assert "doctor: some checks FAILED" in text
    assert_no_secrets(text)
    assert elapsed < 30, f"doctor took {elapsed:.1f}s on a refused connection"


@pytest.mark.s3
def test_doctor_fails_on_an_unreachable_bucket(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'engines.db'}"
    engine = build_engine(Settings(database_url=database_url))
    upgrade(engine)
    engine.dispose()
    env = {"DATABASE_URL": database_url, "RAW_BUCKET": "canvas-x",
           "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "S3_MAX_ATTEMPTS": "1",
           "S3_CONNECT_TIMEOUT": "1", "AUTH_JWT_SIGNING": SECRET_SIGNING}

    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    text = output(doctor)
    assert doctor.returncode == 1, text
    assert check_line(text, "storage").startswith("FAIL  storage: StorageUnavailable")
    assert check_line(text, "database").startswith("ok")
    assert check_line(text, "signing key").startswith("ok")


def cli_token(tmp_path: Path, *args: str) -> str:
    """`engines token --tenant t_acme --sub u_ana ARGS`: the token it printed."""
    result = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", *args, cwd=tmp_path,
                     env={"AUTH_JWT_SIGNING": SIGNING_KEY})
    assert result.returncode == 0, output(result)
    assert SIGNING_KEY not in output(result)
    return result.stdout.strip()


def test_token_is_accepted_by_the_api(tmp_path: Path, make_stack) -> None:
    env = {"AUTH_JWT_SIGNING": SIGNING_KEY}
    token = cli_token(tmp_path, "--role", "member", "--ttl", "60")

    claims = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"])
    assert claims["sub"] == "u_ana"
    assert claims["tenant_ids"] == ["t_acme"]
    assert claims["role_map"] == {"t_acme": "member"}
    assert 55 <= claims["exp"] - time.time() <= 61

    stack = make_stack("local-sqlite")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main"}
    canvas = new_canvas()
    created = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                                headers={**headers, "Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    assert created.json()["actor_id"] == "u_ana"
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1

    viewer = run_cli("token", "--tenant", "t_acme", "--sub", "u_vic", "--role", "viewer",
                     cwd=tmp_path, env=env).stdout.strip()
    denied = stack.client.post(f"/canvas/{canvas}/artifacts/audit?rev=1",
                               headers={**headers, "Authorization": f"Bearer {viewer}"})
    assert denied.status_code == 403


def test_token_rejects_an_unknown_role(tmp_path: Path) -> None:
    result = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", "--role", "root",
                     cwd=tmp_path, env={"AUTH_JWT_SIGNING": SIGNING_KEY})
    assert result.returncode == 2
    assert result.stdout == ""


def test_token_from_another_directory_uses_the_servers_dev_key(tmp_path: Path) -> None:
    """The bug this guards: `engines token` elsewhere made its own key, and every call was 401."""
    home, server_dir, elsewhere = tmp_path / "home", tmp_path / "srv", tmp_path / "elsewhere"
    server_dir.mkdir()
    elsewhere.mkdir()
    with running_server({"ENGINES_HOME": str(home)}, server_dir) as server:
        assert (home / "dev-signing-key").is_file(), "the server made its key in ENGINES_HOME"
        result = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", cwd=elsewhere,
                         env={"ENGINES_HOME": str(home)})
        assert result.returncode == 0, output(result)
        listed = httpx.get(f"{server.url}/canvas/c_1/artifacts", headers={
            "Authorization": f"Bearer {result.stdout.strip()}", "X-Tenant-Id": "t_acme",
            "X-Env": "dev", "X-Project-Id": "p_main"})
    assert listed.status_code == 200, listed.text
    assert not list(elsewhere.rglob("*")), "nothing created where the command ran"


def test_token_says_why_it_cannot_sign_and_creates_no_key(tmp_path: Path) -> None:
    home = tmp_path / "no-server-yet"
    result = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", cwd=tmp_path,
                     env={"ENGINES_HOME": str(home)})
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no dev key at {home / 'dev-signing-key'}" in result.stderr
    assert "ENGINES_HOME" in result.stderr and "AUTH_JWT_SIGNING" in result.stderr
    assert not home.exists()

    jwks_only = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", cwd=tmp_path,
                        env={"AUTH_JWT_ALGORITHMS": '["RS256"]'})
    assert jwks_only.returncode == 1
    assert "does not accept HS256" in jwks_only.stderr


def test_the_default_home_does_not_depend_on_the_current_directory(tmp_path: Path) -> None:
    """Unset ENGINES_HOME means this checkout's var/, from wherever a command runs."""
    show = [sys.executable, "-c", "from engines.config import Settings; s = Settings(); "
            "print(s.engines_home, s.dev_key_file, s.database_url, s.media_local_root)"]
    clean = {k: v for k, v in os.environ.items() if k in _INHERITED}
    seen = set()
    for cwd in (tmp_path, REPO, REPO / "engines"):
        seen.add(subprocess.run(show, cwd=cwd, env=clean, capture_output=True, text=True,
                                check=True).stdout)
    [line] = seen
    var = REPO / "var"
    assert line.split() == [str(var), str(var / "dev-signing-key"),
                            f"sqlite:///{var / 'engines.db'}", str(var / "media")]


@pytest.mark.parametrize("tenant", ["acme", "T_ACME", "t_", "t_a/b", "t_" + "a" * 63])
def test_token_checks_the_tenant_format(tmp_path: Path, tenant: str) -> None:
    result = run_cli("token", "--tenant", tenant, "--sub", "u_ana", cwd=tmp_path,
                     env={"AUTH_JWT_SIGNING": SIGNING_KEY})
    assert result.returncode == 2
    assert result.stdout == ""
    assert "is not a tenant id" in result.stderr


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_cli("--version", cwd=tmp_path, env={})
    assert result.returncode == 0
    assert result.stdout.strip() == f"engines {version('northstar-engines-canvas')}"


def test_token_env_flag_limits_the_token_to_those_envs(tmp_path: Path, make_stack) -> None:
    token = cli_token(tmp_path, "--env", "dev", "--env", "stage")
    assert jwt.decode(token, SIGNING_KEY, algorithms=["HS256"])["envs"] == ["dev", "staging"]

    stack = make_stack("local-sqlite")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme",
               "X-Project-Id": "p_main"}
    for x_env, status in (("dev", 200), ("staging", 200), ("stage", 200), ("prod", 403)):
        listed = stack.client.get("/media-v2/assets", headers={**headers, "X-Env": x_env})
        assert listed.status_code == status, (x_env, listed.text)
    bad = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", "--env", "qa",
                  cwd=tmp_path, env={"AUTH_JWT_SIGNING": SIGNING_KEY})
    assert bad.returncode == 2 and bad.stdout == ""


def test_served_app_keeps_its_start_up_objects_out_of_the_gc(tmp_path: Path) -> None:
    """`engines serve` builds each worker's app with `served_app`, which freezes the
    start-up objects so a full GC pass does not walk them (the create p99 spikes)."""
    probe = ("import gc\nfrom engines.app import served_app\n"
             "before = gc.get_freeze_count()\nserved_app()\n"
             "print(before, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, check=True,
                         env={**os.environ, "ENGINES_HOME": str(tmp_path),
                              "AUTH_JWT_SIGNING": SIGNING_KEY})
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 100_000, out.stdout


def test_token_refuses_a_ttl_that_never_expires(tmp_path: Path) -> None:
    for ttl in ("0", "-5"):
        result = run_cli("token", "--tenant", "t_acme", "--sub", "u_ana", "--ttl", ttl,
                         cwd=tmp_path, env={"AUTH_JWT_SIGNING": SIGNING_KEY})
        assert result.returncode == 2, output(result)
        assert result.stdout == ""
        assert f"--ttl must be at least 1 second, not {ttl}" in result.stderr


def test_doctor_says_whether_tokens_without_exp_are_accepted(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "AUTH_JWT_SIGNING": SECRET_SIGNING}
    strict = output(run_cli("doctor", cwd=tmp_path, env=env))
    assert "  tokens without exp: refused with 401 (AUTH_ALLOW_NO_EXP=false)\n" in strict
    lenient = output(run_cli("doctor", cwd=tmp_path, env={**env, "AUTH_ALLOW_NO_EXP": "true"}))
    assert "  tokens without exp: accepted, valid forever (AUTH_ALLOW_NO_EXP=true)\n" in lenient
    assert "  AUTH_ALLOW_NO_EXP=true\n" in lenient


def test_doctor_warns_when_signed_urls_could_name_no_host(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}
    keyed = output(run_cli("doctor", cwd=tmp_path, env={**env, "AUTH_JWT_SIGNING": SECRET_SIGNING}))
    [warning] = [line for line in keyed.splitlines() if line.startswith("WARN  ")]
    assert "neither PUBLIC_BASE_URL nor ALLOWED_HOSTS is set" in warning
    assert "signed URLs issued for Host: none" in keyed
    for extra in ({"AUTH_JWT_SIGNING": SECRET_SIGNING, "ALLOWED_HOSTS": "api.example.com"},
                  {"AUTH_JWT_SIGNING": SECRET_SIGNING, "PUBLIC_BASE_URL": "https://x.example"},
                  {}):  # the dev key alone: localhost
        text = output(run_cli("doctor", cwd=tmp_path, env={**env, **extra}))
        assert "WARN " not in text, (extra, text)
    dev = output(run_cli("doctor", cwd=tmp_path, env=env))
    assert "signed URLs issued for Host: 127.0.0.1, ::1, localhost (ALLOWED_HOSTS unset" in dev
