"""The `engines` command: serve, token, migrate, doctor, gc, worker."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from engines.config import Settings, get_settings


def _settings() -> Settings:
    return get_settings()


GRACEFUL_SHUTDOWN_SECONDS = 10
"""Open SSE streams never end by themselves: after this, shutdown closes them."""


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engines.app import build_runtime
    from engines.db.migrate import upgrade
    from engines.identity.auth import issue_token

    settings = _settings()
    runtime = build_runtime(settings)
    if settings.should_auto_migrate:
        upgrade(runtime.engine)
    print(f"engines: blobs in {runtime.store.describe()}")
    print(f"engines: metadata in {settings.masked()['database_url']}")
    print(f"engines: serving on http://{args.host}:{args.port} ({args.workers} worker(s))")
    if not settings.auth_jwt_signing and not settings.auth_jwks_url:
        token = issue_token(settings, sub="u_dev", tenants=["t_demo"], role="owner", ttl=86400)
        print(f"engines: dev signing key in {settings.dev_key_file} (set AUTH_JWT_SIGNING "
              "in production); try:")
        print(f"  curl -s -H 'Authorization: Bearer {token}' -H 'X-Tenant-Id: t_demo' "
              f"-H 'X-Env: dev' -H 'X-Project-Id: p_demo' "
              f"http://{args.host}:{args.port}/canvas/c_demo/artifacts")
    runtime.engine.dispose()
    sys.stdout.flush()
    uvicorn.run("engines.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, access_log=args.access_log,
                timeout_keep_alive=30, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from engines.identity.auth import ROLES, issue_token

    if args.role not in ROLES:
        print(f"--role must be one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    print(issue_token(_settings(), sub=args.sub, tenants=args.tenant, role=args.role,
                      ttl=args.ttl or None))
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from engines.db.engine import build_engine
    from engines.db.migrate import pending, upgrade

    settings = _settings()
    engine = build_engine(settings)
    upgrade(engine)
    current, head = pending(engine)
    print(f"engines: {settings.masked()['database_url']} at revision {current} (head {head})")
    return 0


def _check(name: str, fn) -> bool:  # type: ignore[no-untyped-def]
    try:
        detail = fn()
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure, it never raises
        print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
        return False
    print(f"ok    {name}{': ' + detail if detail else ''}")
    return True


def cmd_doctor(_args: argparse.Namespace) -> int:
    from engines.db.engine import build_engine
    from engines.db.migrate import pending
    from engines.storage.factory import build_blob_store

    settings = _settings()
    print("configuration in effect:")
    for key, value in sorted(settings.masked().items()):
        print(f"  {key} = {value}")

    def storage() -> str:
        store = build_blob_store(settings)
        store.check()
        return f"{store.describe()} is writable and readable"

    def database() -> str:
        current, head = pending(build_engine(settings))
        if current != head:
            raise RuntimeError(f"schema at {current}, head is {head}: run `engines migrate`")
        return f"reachable, migrated to {head}"

    def signing_key() -> str:
        if settings.auth_jwt_signing:
            return "AUTH_JWT_SIGNING is set"
        if settings.auth_jwks_url:
            return f"JWKS at {settings.auth_jwks_url}"
        if settings.dev_key_file.exists():
            return f"dev key in {settings.dev_key_file} (set AUTH_JWT_SIGNING in production)"
        raise RuntimeError("AUTH_JWT_SIGNING is not set and no dev key exists")

    results = [_check("storage", storage), _check("database", database),
               _check("signing key", signing_key)]
    ok = all(results)
    print("doctor: all checks passed" if ok else "doctor: some checks FAILED")
    return 0 if ok else 1


_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError("use a number and s, m, h or d, e.g. 15m")
    value, unit = int(match.group(1)), match.group(2)
    names = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    return timedelta(**{names[unit]: value})


def cmd_gc(args: argparse.Namespace) -> int:
    from engines.db.engine import build_engine
    from engines.gc import collect
    from engines.storage.factory import build_blob_store

    settings = _settings()
    report = collect(build_blob_store(settings), build_engine(settings),
                     older_than=args.older_than, apply=args.apply, progress=print)
    print(json.dumps(report.summary(), indent=2))
    return 0


def cmd_worker(_args: argparse.Namespace) -> int:
    import asyncio

    from engines.events.background import run_worker

    settings = _settings()
    print(f"engines: delivering webhooks from {settings.masked()['database_url']}")
    sys.stdout.flush()
    asyncio.run(run_worker(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8010")))
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a signed dev token (HS256)")
    token.add_argument("--tenant", action="append", required=True,
                       help="tenant id; repeat for several")
    token.add_argument("--sub", required=True, help="actor id")
    token.add_argument("--role", default="member")
    token.add_argument("--ttl", type=int, default=3600, help="seconds; 0 for no expiry")
    token.set_defaults(func=cmd_token)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("doctor", help="print config, check every backend").set_defaults(
        func=cmd_doctor)

    gc = sub.add_parser("gc", help="find (and with --apply remove) orphan blobs")
    gc.add_argument("--older-than", type=parse_duration, default=timedelta(minutes=15))
    gc.add_argument("--apply", action="store_true", help="delete; default is a dry run")
    gc.set_defaults(func=cmd_gc)

    sub.add_parser("worker", help="deliver webhooks (without serving HTTP)").set_defaults(
        func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
