"""The `engines` command: serve, token, migrate, doctor, gc, retention, purge, import,
worker, artifacts, quota."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from engines.common.durations import format_duration, parse_duration
from engines.config import Settings, get_settings

if TYPE_CHECKING:  # imported where used at run time: the CLI starts without them
    from sqlalchemy.engine import Engine

    from engines.canvas_artifacts.quotas import Quota, Used


def _settings() -> Settings:
    return get_settings()


@contextlib.contextmanager
def _disposed(engine: Engine) -> Iterator[Engine]:
    """A command's engine, its pool closed on the way out: main() also runs inside longer
    processes (the tests call it in process), which must not be left open connections."""
    try:
        yield engine
    finally:
        engine.dispose()


GRACEFUL_SHUTDOWN_SECONDS = 10
"""Open SSE streams never end by themselves: after this, shutdown closes them."""


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from sqlalchemy.exc import ArgumentError

    from engines.app import build_runtime
    from engines.auth.tokens import issue_token
    from engines.observability.logging import log_config
    from engines.observability.metrics import multiprocess_dir
    from engines.preflight import serve_refusals
    from engines.server import listen, run, uvicorn_options

    settings = _settings()
    workers = args.workers or default_workers()
    try:
        runtime = build_runtime(settings)
    except ArgumentError as exc:
        return _refuse(f"DATABASE_URL is not a database URL: {exc} (use sqlite:///PATH or "
                       "postgresql+psycopg://USER@HOST:PORT/DB)")
    refusals = serve_refusals(settings, runtime)  # migrates first when auto-migrate is on
    runtime.engine.dispose()
    if refusals:
        return _refuse(*refusals)
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        return _refuse(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"engines: blobs in {runtime.store.describe()}")
    print(f"engines: metadata in {settings.masked()['database_url']}")
    print(f"engines: serving on http://{args.host}:{args.port} ({workers} worker(s))")
    if not settings.auth_jwt_signing and not settings.auth_jwks_url:
        token = issue_token(settings, sub="u_dev", tenants=["t_demo"], role="owner", ttl=86400)
        print(f"engines: dev signing key in {settings.dev_key_file} (set AUTH_JWT_SIGNING "
              "in production); try:")
        print(f"  curl -s -H 'Authorization: Bearer {token}' -H 'X-Tenant-Id: t_demo' "
              f"-H 'X-Env: dev' -H 'X-Project-Id: p_demo' "
              f"http://{args.host}:{args.port}/canvas/c_demo/artifacts")
    sys.stdout.flush()
    # our request log line replaces uvicorn's access log (--no-access-log silences it)
    logging_config = log_config(settings, level=args.log_level, request_log=args.access_log)
    config = uvicorn.Config("engines.app:served_app", factory=True, host=args.host,
                            port=args.port, workers=workers, log_level=args.log_level,
                            access_log=False, log_config=logging_config,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                            **uvicorn_options(settings))
    with multiprocess_dir(workers):
        started = run(config, sock)
    return 0 if started else 3


def _refuse(*reasons: str) -> int:
    """`engines serve` will not start: one line per reason, on stderr, exit 1."""
    for reason in reasons:
        print(f"engines serve: refusing to start: {reason}", file=sys.stderr)
    return 1


def default_workers() -> int:
    """One worker per core this process may run on: a create or fetch is CPU-bound
    Python, so one process uses one core; SQLite in WAL mode takes several
    writer processes (each groups its creates into one transaction, and they take turns
    through the writer's flock beside the database file)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def token_key_problem(settings: Settings) -> str | None:
    """Why `engines token` cannot sign a token the server accepts, or None.

    Never creates a key: a new dev key here would not be the server's, and
    every request with the token would fail with 401.
    """
    if "HS256" not in settings.auth_jwt_algorithms:
        return (f"the server does not accept HS256 tokens (AUTH_JWT_ALGORITHMS="
                f"{','.join(settings.auth_jwt_algorithms)}); get a token from your issuer")
    if settings.auth_jwt_signing or settings.dev_key_file.is_file():
        return None
    return (f"AUTH_JWT_SIGNING is not set and there is no dev key at {settings.dev_key_file}. "
            "The server creates it when it first starts (`make run` or `engines serve`) in "
            f"ENGINES_HOME ({settings.engines_home} here): run this command with the server's "
            "ENGINES_HOME, or with its AUTH_JWT_SIGNING")


def cmd_token(args: argparse.Namespace) -> int:
    from engines.auth.tokens import ROLES, issue_token

    if args.role not in ROLES:
        print(f"--role must be one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print(f"engines token: --ttl must be at least 1 second, not {args.ttl}: every token "
              "expires", file=sys.stderr)
        return 2
    envs = sorted(set(args.env)) if args.env else None
    settings = _settings()
    problem = token_key_problem(settings)
    if problem:
        print(f"engines token: {problem}", file=sys.stderr)
        return 1
    print(issue_token(settings, sub=args.sub, tenants=args.tenant, role=args.role,
                      ttl=args.ttl, envs=envs))
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


def _check(name: str, fn: Callable[[Settings], str], settings: Settings) -> tuple[bool, str]:
    """(passed, the doctor's line for it)."""
    from engines.preflight import CheckFailed

    try:
        detail = fn(settings)
    except CheckFailed as exc:
        return False, f"FAIL  {name}: {exc}"
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure, it never raises
        return False, f"FAIL  {name}: {type(exc).__name__}: {exc}"
    return True, f"ok    {name}{': ' + detail if detail else ''}"


def cmd_doctor(_args: argparse.Namespace) -> int:
    """The verdict first, then each check and warning, then the settings behind them."""
    from engines.preflight import DOCTOR_CHECKS
    from engines.settings_view import assignments, consequences, warnings

    settings = _settings()
    results = [_check(name, fn, settings) for name, fn in DOCTOR_CHECKS]
    ok = all(passed for passed, _line in results)
    print("doctor: all checks passed" if ok else "doctor: some checks FAILED")
    for _passed, line in results:
        print(line)
    for line in warnings(settings):
        print(f"WARN  {line}")
    print("settings in effect (secrets masked):")
    for line in assignments(settings):
        print(f"  {line}")
    print("which means:")
    for line in consequences(settings):
        print(f"  {line}")
    return 0 if ok else 1


def tenant_arg(text: str) -> str:
    """--tenant: a tenant id, as X-Tenant-Id must be."""
    from engines.http.params import TENANT_RE

    if not TENANT_RE.match(text) or len(text) > 64:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tenant id: t_ then a-z, 0-9, _ or - (64 characters at most), "
            "e.g. t_acme")
    return text


def env_arg(text: str) -> str:
    """--env: dev, staging (or stage) or prod, as X-Env accepts them; the canonical name."""
    from engines.http.params import ENVS

    env = ENVS.get(text.lower())
    if env is None:
        raise argparse.ArgumentTypeError("must be one of dev, staging, prod")
    return env


def duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


GC_LEGEND = """\
gc: deleted_record_blobs = blobs of deleted or expired artifacts, removed at once
gc: orphan_blobs = blobs no record references, older than --older-than (a create killed midway)
gc: incomplete_uploads = unfinished uploads older than --older-than holding no upload lease
gc: expired_upload_sessions = open upload sessions past their expiry: their parts aborted
gc: records_missing_blob = live artifacts whose blob is gone: reported, never changed
gc: kept_referenced = planned deletions skipped because a record committed meanwhile
gc: retention = artifacts past their retention (RETENTION_*, `engines retention`)"""


def cmd_gc(args: argparse.Namespace) -> int:
    from engines.app import build_runtime
    from engines.lifecycle.delete import SHOWN_IDS, ExpiryPlan, expire_all
    from engines.lifecycle.gc import collect

    settings = _settings()
    runtime = build_runtime(settings)
    with _disposed(runtime.engine), contextlib.ExitStack() as stack:
        max_share = settings.gc_max_delete_share if args.max_share is None else args.max_share
        output = stack.enter_context(open(args.output, "w")) if args.output else None  # noqa: SIM115
        action = "expired" if args.apply else "would expire"

        def listing(plan: ExpiryPlan, batch: list[str]) -> None:
            """Each batch of expired ids straight to --output: none is kept in memory."""
            assert output is not None
            output.writelines(json.dumps({
                "action": action, "reason": "retention", "tenant_id": plan.tenant_id,
                "env": plan.env, "kind": plan.kind, "id": artifact_id}) + "\n"
                for artifact_id in batch)

        retention = expire_all(runtime, apply=args.apply, progress=print,
                               listing=listing if output is not None else None,
                               shown_ids=None if args.verbose else SHOWN_IDS)
        report = collect(runtime.store, runtime.engine,
                         older_than=args.older_than, apply=args.apply, force=args.force,
                         max_share=max_share, progress=print)
        verb = "deleted" if args.apply and not report.refused else "would delete"
        lines = [json.dumps({"action": verb, "reason": reason, "key": key})
                 for reason, key in report.planned()]
        if output is not None:
            output.writelines(f"{line}\n" for line in lines)
            expired = sum(cast(int, plan["expired" if args.apply else "would_expire"])
                          for plan in retention)
            print(f"gc: {expired} artifact ids and {len(lines)} keys listed in "
                  f"{args.output}")
        if args.verbose:
            print("\n".join(lines))
        if not args.apply:  # before the summary, which stays the last thing printed
            print("gc: dry run, nothing deleted; add --apply to delete it")
        print(GC_LEGEND)
        print(json.dumps({**report.summary(), "retention": retention}, indent=2))
        if report.refused:
            print(f"gc: refused: {report.refused}", file=sys.stderr)
            return 3
        return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from engines.canvas_artifacts.models import ALL_ENVS, KINDS
    from engines.db.engine import build_engine
    from engines.db.writer import write_transaction
    from engines.lifecycle import retention

    settings = _settings()
    with _disposed(build_engine(settings)) as engine:
        if args.action == "show":
            print("configured (RETENTION_*; unset keeps forever):")
            for kind in KINDS:
                keep = settings.retention_for(kind)
                print(f"  {kind}: {format_duration(keep) if keep else 'forever'}")
            print(f"  keep latest of each kind per canvas: {settings.retention_keep_latest}")
            print("tenant overrides:")
            with engine.connect() as conn:
                overrides = retention.overrides(conn)
            for o in overrides:
                print(f"  {o.tenant_id} env={o.env} {o.kind}: "
                      f"{format_duration(o.keep) if o.keep else 'forever'}")
            if not overrides:
                print("  none: every tenant keeps what is configured above "
                      "(`engines retention set` adds one)")
            return 0
        if not args.tenant or not args.kind:
            print("--tenant t_... and --kind are required", file=sys.stderr)
            return 2
        env = ALL_ENVS if args.env is None else args.env
        with write_transaction(engine) as conn:
            if args.action == "unset":
                removed = retention.unset_override(conn, args.tenant, env, args.kind)
                print(f"retention: {'removed' if removed else 'no'} override for {args.tenant} "
                      f"env={env} {args.kind}")
                return 0
            try:
                keep = None if args.keep == "forever" else parse_duration(args.keep or "")
            except ValueError as exc:
                print(f"--keep: {exc} (or 'forever')", file=sys.stderr)
                return 2
            retention.set_override(conn, args.tenant, env, args.kind, keep)
        print(f"retention: {args.tenant} env={env} {args.kind} keeps "
              f"{format_duration(keep) if keep else 'forever'}")
        return 0


def _quota_line(quota: Quota, usage: Used) -> str:
    def limit(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    return (f"  {quota.tenant_id} env={quota.env}: bytes {usage.bytes}/"
            f"{limit(quota.max_bytes)}, artifacts {usage.artifacts}/"
            f"{limit(quota.max_artifacts)}")


def cmd_quota(args: argparse.Namespace) -> int:
    from engines.canvas_artifacts import quotas
    from engines.db.engine import build_engine
    from engines.db.writer import write_transaction

    with _disposed(build_engine(_settings())) as engine:
        env = quotas.ALL_ENVS if args.env is None else args.env
        if args.action == "show":
            with engine.connect() as conn:
                found = quotas.list_quotas(conn, args.tenant)
                print("quotas (used/limit; env=* is the tenant's total over every env):"
                      if found else "quotas: none set")
                for quota in found:
                    print(_quota_line(quota, quotas.used(conn, quota.tenant_id, quota.env)))
            return 0
        if not args.tenant:
            print("--tenant t_... is required", file=sys.stderr)
            return 2
        with write_transaction(engine) as conn:
            if args.action == "unset":
                removed = quotas.unset_quota(conn, args.tenant, env)
                print(f"quota: {'removed' if removed else 'no'} quota for {args.tenant} env={env}")
                return 0
            if args.bytes is None and args.artifacts is None:
                print("--bytes and/or --artifacts is required", file=sys.stderr)
                return 2
            quota = quotas.set_quota(conn, args.tenant, env, max_bytes=args.bytes,
                                     max_artifacts=args.artifacts)
            print("quota: set")
            print(_quota_line(quota, quotas.used(conn, quota.tenant_id, quota.env)))
        return 0


def size_arg(text: str) -> int:
    from engines.canvas_artifacts.quotas import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def count_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of artifacts")
    return int(text)


def cmd_purge(args: argparse.Namespace) -> int:
    from engines.db.engine import build_engine
    from engines.lifecycle.purge import purge
    from engines.storage.factory import build_blob_store

    settings = _settings()
    with _disposed(build_engine(settings)) as engine:
        report = purge(build_blob_store(settings), engine, args.tenant, args.env,
                       apply=args.apply, progress=print)
    print(json.dumps(report.summary(), indent=2))
    if not args.apply:
        print("purge: dry run, nothing removed; add --apply to remove it all")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    from engines.app import build_runtime
    from engines.http.errors import ApiError
    from engines.lifecycle.delete import SYSTEM_ACTOR
    from engines.lifecycle.import_archive import Target, import_file

    path = Path(args.file)
    if not path.is_file():
        print(f"engines import: no such file: {path}", file=sys.stderr)
        return 2
    runtime = build_runtime(_settings())
    request_id = f"cli_import_{uuid.uuid4().hex}"
    target = Target(tenant_id=args.tenant, env=args.env, canvas_id=args.canvas,
                    actor_id=SYSTEM_ACTOR, request_id=request_id, correlation_id=request_id,
                    source=str(path.resolve()))
    try:
        report = asyncio.run(import_file(runtime, path, target))
    except ApiError as exc:
        print(f"engines import: {exc.message}", file=sys.stderr)
        return 2
    finally:
        runtime.engine.dispose()
    print(json.dumps(report.model_dump(mode="json"), indent=2))
    if report.conflicts or report.failed:
        print(f"import: {report.imported} imported, {len(report.conflicts)} conflicts, "
              f"{len(report.failed)} failed", file=sys.stderr)
        return 1
    return 0


def canvas_arg(text: str) -> str:
    """--canvas: a canvas id, as the routes accept it."""
    from engines.http.params import is_safe_id

    if len(text) > 128 or not is_safe_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a canvas id (A-Z, a-z, 0-9, _ . -)")
    return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("northstar-engines-canvas")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8010")))
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: one per core)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                       help="one log line per request (LOG_FORMAT: json or text)")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a signed dev token (HS256)")
    token.add_argument("--tenant", action="append", required=True, type=tenant_arg,
                       help="tenant id; repeat for several")
    token.add_argument("--sub", required=True, help="actor id")
    token.add_argument("--role", default="member")
    token.add_argument("--ttl", type=int, default=3600,
                       help="seconds until it expires (at least 1; default 3600)")
    token.add_argument("--env", action="append", type=env_arg,
                       help="limit the token to this env; repeat for several (default: all)")
    token.set_defaults(func=cmd_token)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("doctor", help="print config, check every backend").set_defaults(
        func=cmd_doctor)

    gc = sub.add_parser("gc", help="find (and with --apply remove) orphan blobs")
    gc.add_argument("--older-than", type=duration_arg, default=timedelta(minutes=15),
                    help="grace period for orphans and unfinished uploads (default 15m)")
    gc.add_argument("--apply", action="store_true", help="delete; default is a dry run")
    gc.add_argument("--force", action="store_true",
                    help="delete even when more than --max-share of the blobs look orphaned")
    gc.add_argument("--max-share", type=float, default=None,
                    help="refuse --apply above this share of orphans (default "
                         "GC_MAX_DELETE_SHARE, 0.10)")
    gc.add_argument("--verbose", action="store_true",
                    help="print every key it deletes and every artifact id it expires "
                         "(default: the first 100 ids per tenant, env and kind)")
    gc.add_argument("--output", help="write every artifact id it expires and every key it "
                                     "deletes to this file (JSON lines)")
    gc.set_defaults(func=cmd_gc)

    ret = sub.add_parser("retention", help="per-tenant retention overrides")
    ret.add_argument("action", choices=["show", "set", "unset"])
    ret.add_argument("--tenant", type=tenant_arg)
    ret.add_argument("--env", type=env_arg, help="one env; default: every env of the tenant")
    ret.add_argument("--kind", choices=["preview", "replay", "audit"])
    ret.add_argument("--keep", help="a duration (90d, 12h, 30m, 45s) or 'forever'")
    ret.set_defaults(func=cmd_retention)

    quota = sub.add_parser("quota", help="per-tenant quotas on stored bytes and artifacts")
    quota.add_argument("action", choices=["show", "set", "unset"])
    quota.add_argument("--tenant", type=tenant_arg, help="required for set and unset")
    quota.add_argument("--env", type=env_arg,
                       help="one env; default: the tenant's total over every env")
    quota.add_argument("--bytes", type=size_arg, help="a size: 10GiB, 500MB, 1048576")
    quota.add_argument("--artifacts", type=count_arg, help="live artifacts at most")
    quota.set_defaults(func=cmd_quota)

    pg = sub.add_parser("purge", help="remove every blob and row of a tenant (dry run unless "
                                      "--apply)")
    pg.add_argument("--tenant", required=True, type=tenant_arg)
    pg.add_argument("--env", type=env_arg, help="one env; default: every env")
    pg.add_argument("--apply", action="store_true", help="remove; default is a dry run")
    pg.set_defaults(func=cmd_purge)
    imp = sub.add_parser("import", help="restore an export (the tar GET .../export answers) "
                                        "into a tenant/env")
    imp.add_argument("file", help="the tar file")
    imp.add_argument("--tenant", required=True, type=tenant_arg)
    imp.add_argument("--env", required=True, type=env_arg)
    imp.add_argument("--canvas", type=canvas_arg,
                     help="put every artifact in this canvas (default: each record's own)")
    imp.set_defaults(func=cmd_import)
    sub.add_parser("worker", help="deliver webhooks (without serving HTTP)").set_defaults(
        func=cmd_worker)

    # ---- engines artifacts put|get|ls|rm|export|watch: the Python client at a terminal
    # (engines/client/cli.py holds the verbs; docs/client.md documents them)
    from engines.client.cli import add_parser as add_artifacts_parser

    add_artifacts_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
