"""The production checklist: what `engines serve` refuses to start on, and `engines doctor` fails.

The embedded default (SQLite and a local directory) runs with no settings at
all: it makes a dev signing key in ENGINES_HOME and migrates on start.
Anything else (PostgreSQL or S3 configured) is a deployment other people
rely on, and there a missing secret, an unmigrated schema or a missing
bucket must stop the server before it answers a single request, rather than
show up as 401s, 503s and "please retry" later. docs/production.md lists
the same checks for operators.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from engines.common.outage import one_line
from engines.config import NO_DEV_KEY_HERE, Settings
from engines.db.migrate import pending, schema_problem, upgrade
from engines.runtime import Runtime
from engines.storage.base import BlobStore, StorageUnavailable


class CheckFailed(Exception):
    """A check's failure in plain words: doctor prints the message as it is."""


def signing_key_problem(settings: Settings) -> str | None:
    """Tokens need a key: given, or (embedded default only) the dev key."""
    if settings.auth_jwt_signing or settings.auth_jwks_url or settings.is_embedded:
        return None
    return NO_DEV_KEY_HERE


def url_signing_problem(settings: Settings) -> str | None:
    """Signed URLs want their own key outside the embedded default: one derived from the
    JWT key changes with it, so rotating the token key would break every URL handed out."""
    if settings.url_signing_key or settings.is_embedded:
        return None
    return ("URL_SIGNING_KEY is not set: outside the embedded default signed URLs need a key "
            "of their own; set URL_SIGNING_KEY (a long random string, the same on every "
            "replica)")


def _url_key_missing(settings: Settings) -> str | None:
    """No key at all to sign URLs with: tokens come from a JWKS and URL_SIGNING_KEY is unset
    (with neither a JWKS nor AUTH_JWT_SIGNING, `signing_key_problem` says so)."""
    if (settings.is_embedded or settings.url_signing_key or settings.auth_jwt_signing
            or not settings.auth_jwks_url):
        return None
    return ("URL_SIGNING_KEY is not set, and with tokens verified against AUTH_JWKS_URL there "
            "is no AUTH_JWT_SIGNING to derive it from: set URL_SIGNING_KEY")


def database_problem(engine: Engine, *, auto_migrate: bool) -> str | None:
    """Reachable and at head (after migrating, with auto-migrate on)."""
    try:
        if auto_migrate:
            upgrade(engine)
        current, head = pending(engine)
    except SQLAlchemyError as exc:
        return f"database unreachable: {one_line(exc)}"
    problem = schema_problem(current, head)
    if problem is None:
        return None
    return f"{problem}: run `engines migrate` first (or set AUTO_MIGRATE=true)"


def storage_problem(store: BlobStore) -> str | None:
    try:
        store.probe()
    except StorageUnavailable as exc:
        return str(exc)
    return None


def serve_refusals(settings: Settings, runtime: Runtime) -> list[str]:
    """Why `engines serve` must not start, one line each; empty when it may.

    Migrates first when auto-migrate is on (the embedded default), so a fresh
    SQLite file is never a refusal.
    """
    problems = [signing_key_problem(settings), _url_key_missing(settings),
                database_problem(runtime.engine, auto_migrate=settings.should_auto_migrate),
                storage_problem(runtime.store)]
    return [problem for problem in problems if problem]


# ---- engines doctor: each check answers a detail or raises ------------------


def check_storage(settings: Settings) -> str:
    from engines.storage.factory import build_blob_store

    store = build_blob_store(settings)
    store.probe()
    store.check()
    return f"{store.describe()} is writable and readable"


def check_database(settings: Settings) -> str:
    from engines.db.engine import build_engine

    engine = build_engine(settings)
    try:
        current, head = pending(engine)
    finally:
        engine.dispose()
    problem = schema_problem(current, head)
    if problem:
        raise CheckFailed(f"{problem}: run `engines migrate`")
    return f"reachable, migrated to {head}"


def check_signing_key(settings: Settings) -> str:
    if settings.auth_jwt_signing:
        return "AUTH_JWT_SIGNING is set"
    if settings.auth_jwks_url:
        return f"JWKS at {settings.auth_jwks_url}"
    problem = signing_key_problem(settings)
    if problem:
        raise CheckFailed(problem)
    if settings.dev_key_file.exists():
        return (f"dev key in {settings.dev_key_file} (embedded default only; set "
                "AUTH_JWT_SIGNING in production)")
    raise CheckFailed(f"AUTH_JWT_SIGNING is not set and there is no dev key at "
                      f"{settings.dev_key_file} (`engines serve` creates it on the embedded "
                      "default)")


def check_signed_urls(settings: Settings) -> str:
    if settings.url_signing_key:
        return "URL_SIGNING_KEY is set"
    problem = url_signing_problem(settings)
    if problem:
        raise CheckFailed(problem)
    return "key derived from the JWT key (embedded default; set URL_SIGNING_KEY in production)"


DOCTOR_CHECKS: tuple[tuple[str, Callable[[Settings], str]], ...] = (
    ("storage", check_storage), ("database", check_database),
    ("signing key", check_signing_key), ("signed URLs", check_signed_urls))
