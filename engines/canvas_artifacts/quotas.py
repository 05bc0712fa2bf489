"""Quotas per tenant: limits on stored bytes and artifacts, and the usage they meet.

Usage is a counter row per (tenant, env, kind), moved in the very transaction
that creates or deletes an artifact (create, DELETE, canvas delete, retention;
a purge removes the rows with the tenant's other rows), so it cannot drift
from the records. A quota is an operator's row (`engines quota set`) for one
env of a tenant, or for all of them (`*`: the tenant's total over its envs).

The create transaction is where a quota is enforced: it locks the quota rows
that apply (SELECT ... FOR UPDATE on PostgreSQL; SQLite has one writer), adds
the artifact to the usage and reads the total back, so two creates near the
limit cannot both pass. Before any byte is read, `precheck` refuses a create
whose declared size or count would already exceed a quota; it reads limits
through a one-second cache, which may only let a create reach the final check
(its blob is then discarded), never refuse one the final check would accept.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    String,
    Table,
    bindparam,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from starlette.concurrency import run_in_threadpool

from engines.canvas_artifacts.models import ALL_ENVS, KINDS, ArtifactRecord
from engines.common.cache import Cache
from engines.db.idempotency import idempotency_keys
from engines.db.metadata import UtcDateTime, metadata
from engines.db.upsert import upsert
from engines.db.writer import Part, deferred
from engines.http.errors import PayloadTooLarge

log = logging.getLogger("engines.quotas")

tenant_quotas = Table(
    "tenant_quotas", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("env", String(16), primary_key=True),
    Column("max_bytes", BigInteger),
    Column("max_artifacts", BigInteger),
    Column("updated_at", UtcDateTime, nullable=False),
)

tenant_usage = Table(
    "tenant_usage", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("env", String(16), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("bytes", BigInteger, nullable=False),
    Column("artifacts", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Quota:
    tenant_id: str
    env: str
    """One env, or `*` for the tenant's total over every env."""
    max_bytes: int | None
    max_artifacts: int | None


@dataclass(frozen=True, slots=True)
class Used:
    bytes: int
    artifacts: int


class QuotaExceeded(PayloadTooLarge):
    code = "quota.exceeded"


def _scope_name(quota: Quota) -> str:
    where = "all envs" if quota.env == ALL_ENVS else f"env {quota.env}"
    return f"tenant {quota.tenant_id} ({where})"


def _check(quota: Quota, used: Used, adds_bytes: int) -> None:
    """Raise if usage `used` plus one artifact of `adds_bytes` bytes is over the quota."""
    if quota.max_artifacts is not None and used.artifacts + 1 > quota.max_artifacts:
        raise QuotaExceeded(f"quota exceeded: {_scope_name(quota)} allows "
                            f"{quota.max_artifacts} artifacts and {used.artifacts} are stored")
    if quota.max_bytes is not None and used.bytes + adds_bytes > quota.max_bytes:
        raise QuotaExceeded(f"quota exceeded: {_scope_name(quota)} allows {quota.max_bytes} "
                            f"bytes, {used.bytes} are used and this artifact adds {adds_bytes}")


_LIMITS = (select(tenant_quotas)
           .where(tenant_quotas.c.tenant_id == bindparam("tenant_id"),
                  tenant_quotas.c.env.in_([bindparam("env"), literal(ALL_ENVS)]))
           .order_by(tenant_quotas.c.env))
_LOCKED_LIMITS = _LIMITS.with_for_update()
"""Built once: both run before every create (the pre-check, the commit's lock)."""


def _limits(conn: Connection, tenant_id: str, env: str, *, lock: bool) -> list[Quota]:
    rows = conn.execute(_LOCKED_LIMITS if lock else _LIMITS, {"tenant_id": tenant_id, "env": env})
    return [Quota(row.tenant_id, row.env, row.max_bytes, row.max_artifacts) for row in rows]


def used(conn: Connection, tenant_id: str, env: str) -> Used:
    """Usage of one env of the tenant, or (env `*`) of all its envs together."""
    query = select(func.coalesce(func.sum(tenant_usage.c.bytes), 0),
                   func.coalesce(func.sum(tenant_usage.c.artifacts), 0)).where(
        tenant_usage.c.tenant_id == tenant_id)
    if env != ALL_ENVS:
        query = query.where(tenant_usage.c.env == env)
    total_bytes, artifacts = conn.execute(query).one()
    return Used(int(total_bytes), int(artifacts))


def _move_statement(dialect: Any) -> Any:
    stmt = dialect.insert(tenant_usage).values(
        tenant_id=bindparam("tenant_id"), env=bindparam("env"), kind=bindparam("kind"),
        bytes=bindparam("bytes"), artifacts=bindparam("artifacts"))
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "env", "kind"],
        set_={"bytes": tenant_usage.c.bytes + stmt.excluded.bytes,
              "artifacts": tenant_usage.c.artifacts + stmt.excluded.artifacts})


_MOVE = {"postgresql": _move_statement(postgresql), "sqlite": _move_statement(sqlite)}
"""Built once: it runs in every create and delete transaction."""

Counter3 = Counter[tuple[str, str, str]]


def _move(conn: Connection, sizes: Counter3, counts: Counter3, sign: int = 1) -> None:
    """One upsert per (tenant, env, kind) counter, in key order (concurrent batches then
    never wait on each other in a cycle), sent as one executemany."""
    moves = [{"tenant_id": key[0], "env": key[1], "kind": key[2], "bytes": sign * sizes[key],
              "artifacts": sign * counts[key]} for key in sorted(counts)]
    if moves:
        conn.execute(_MOVE["postgresql" if conn.dialect.name == "postgresql" else "sqlite"],
                     moves)


def _tally(records: Iterable[ArtifactRecord]) -> tuple[Counter3, Counter3]:
    sizes: Counter3 = Counter()
    counts: Counter3 = Counter()
    for record in records:
        key = (record.tenant_id, record.env, record.kind)
        sizes[key] += record.size_bytes or 0
        counts[key] += 1
    return sizes, counts


class _UsageDeltas(Part):
    """A batch's creates in scopes without a quota, summed per counter until the flush."""

    def __init__(self) -> None:
        self.records: list[ArtifactRecord] = []

    def flush(self, conn: Connection) -> None:
        records, self.records = self.records, []
        _move(conn, *_tally(records))


def count_created(conn: Connection, record: ArtifactRecord) -> None:
    """In the create transaction: add the artifact to the usage; over a quota -> 413.

    The quota rows are locked first, in one order, so concurrent creates of a
    tenant with a quota take turns here and each sees the others' usage. In a
    SQLite group-commit batch (one writer: nothing else moves meanwhile) a
    scope's limits are read once for the batch, and in a scope with no quota
    the artifact only joins the batch's usage deltas: nothing to check, one
    upsert per counter at the flush. A scope with a quota moves and checks at once.
    """
    size = record.size_bytes or 0
    batch = deferred(conn)
    scope = ("quota.limits", record.tenant_id, record.env)
    limits = batch.memo.get(scope) if batch is not None else None
    if limits is None:
        limits = _limits(conn, record.tenant_id, record.env, lock=True)
        if batch is not None:
            batch.memo[scope] = limits
    if not limits and batch is not None:
        batch.part("quota.usage", _UsageDeltas).records.append(record)
        return
    _move(conn, *_tally([record]))
    for quota in limits:
        after = used(conn, record.tenant_id, quota.env)
        _check(quota, Used(after.bytes - size, after.artifacts - 1), size)


def count_deleted(conn: Connection, records: Iterable[ArtifactRecord]) -> None:
    """In the delete transaction: take the records out of the usage."""
    _move(conn, *_tally(records), sign=-1)


# ---- before any byte is stored ----------------------------------------------------

LIMITS_CACHE_SECONDS = 1.0
LIMITS_CACHE_MAX = 10_000
_limits_cache: Cache[tuple[str, str], list[Quota]] = Cache(LIMITS_CACHE_MAX,
                                                          LIMITS_CACHE_SECONDS)
"""The limits of a scope, for the check before the body: the one cache design
(engines/common/cache.py); stale, it can only let a create reach the final check."""


def _cached_limits(engine: Engine, tenant_id: str, env: str) -> list[Quota]:
    key = (tenant_id, env)
    hit = _limits_cache.get(key)
    if hit is not None:
        return hit
    started = _limits_cache.now()
    with engine.connect() as conn:
        limits = _limits(conn, tenant_id, env, lock=False)
    _limits_cache.put(key, limits, started, scope=key)
    return limits


def _precheck(engine: Engine, tenant_id: str, env: str, adds_bytes: int,
              idempotency_key: str | None) -> None:
    limits = _cached_limits(engine, tenant_id, env)
    if not limits:
        return
    with engine.connect() as conn:
        try:
            for quota in limits:
                _check(quota, used(conn, tenant_id, quota.env), adds_bytes)
        except QuotaExceeded:
            # a retry of a create that already succeeded replays it: the key decides
            if idempotency_key is not None and conn.execute(select(idempotency_keys.c.key).where(
                    idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.env == env,
                    idempotency_keys.c.key == idempotency_key)).first() is not None:
                return
            raise


async def precheck(engine: Engine, tenant_id: str, env: str, adds_bytes: int | None,
                   idempotency_key: str | None = None) -> None:
    """413 before the body is read when one more artifact of `adds_bytes` (the declared
    size; None if unknown, then only the count is checked) would exceed a quota.

    Only an early answer: the check in the commit transaction decides. A database that
    cannot be asked here fails the create now (503 `metadata.unavailable`), before any
    byte is stored, rather than after a second wait for it."""
    if _limits_cache.get((tenant_id, env)) == []:
        return  # no quota on this scope (cached): no thread hop on the hot path
    await run_in_threadpool(_precheck, engine, tenant_id, env, adds_bytes or 0,
                            idempotency_key)


def declared_size(content_length: str | None) -> int | None:
    """The Content-Length of a body that is stored as sent, if the client gave one."""
    return int(content_length) if content_length and content_length.isdigit() else None


# ---- operators (`engines quota`) and GET /usage -----------------------------------


def set_quota(conn: Connection, tenant_id: str, env: str, *, max_bytes: int | None,
              max_artifacts: int | None) -> Quota:
    """Set the given limits; a limit not given keeps its current value."""
    current = get_quota(conn, tenant_id, env)
    quota = Quota(tenant_id, env,
                  max_bytes if max_bytes is not None else current and current.max_bytes,
                  max_artifacts if max_artifacts is not None
                  else current and current.max_artifacts)
    conn.execute(upsert(conn, tenant_quotas, ["tenant_id", "env"]), {
        "tenant_id": tenant_id, "env": env, "max_bytes": quota.max_bytes,
        "max_artifacts": quota.max_artifacts, "updated_at": datetime.now(UTC)})
    return quota


def get_quota(conn: Connection, tenant_id: str, env: str) -> Quota | None:
    row = conn.execute(select(tenant_quotas).where(tenant_quotas.c.tenant_id == tenant_id,
                                                   tenant_quotas.c.env == env)).first()
    return Quota(row.tenant_id, row.env, row.max_bytes, row.max_artifacts) if row else None


def unset_quota(conn: Connection, tenant_id: str, env: str) -> bool:
    return bool(conn.execute(delete(tenant_quotas).where(
        tenant_quotas.c.tenant_id == tenant_id, tenant_quotas.c.env == env)).rowcount)


def list_quotas(conn: Connection, tenant_id: str | None = None) -> list[Quota]:
    query = select(tenant_quotas).order_by(tenant_quotas.c.tenant_id, tenant_quotas.c.env)
    if tenant_id is not None:
        query = query.where(tenant_quotas.c.tenant_id == tenant_id)
    return [Quota(r.tenant_id, r.env, r.max_bytes, r.max_artifacts) for r in conn.execute(query)]


def usage_report(conn: Connection, tenant_id: str, env: str) -> dict[str, object]:
    """GET /usage: bytes and count per kind of one (tenant, env), and the quotas in force."""
    rows = conn.execute(select(tenant_usage.c.kind, tenant_usage.c.bytes,
                               tenant_usage.c.artifacts).where(
        tenant_usage.c.tenant_id == tenant_id, tenant_usage.c.env == env))
    kinds = {kind: {"bytes": 0, "count": 0} for kind in KINDS}
    for kind, size, count in rows:
        kinds[kind] = {"bytes": int(size), "count": int(count)}
    quotas = []
    for quota in _limits(conn, tenant_id, env, lock=False):
        usage = used(conn, tenant_id, quota.env)
        quotas.append({"env": quota.env, "max_bytes": quota.max_bytes,
                       "max_artifacts": quota.max_artifacts, "used_bytes": usage.bytes,
                       "used_artifacts": usage.artifacts})
    return {"tenant_id": tenant_id, "env": env, "kinds": kinds,
            "total": {"bytes": sum(k["bytes"] for k in kinds.values()),
                      "count": sum(k["count"] for k in kinds.values())},
            "quotas": quotas}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}


def parse_size(text: str) -> int:
    """`10GiB`, `500MB`, `1.5TiB`, `1048576`: a byte count (binary and decimal units)."""
    match = _SIZE.match(text)
    unit = (match[2] or "").lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: a number with an optional unit "
                         "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 10GiB")
    return int(float(match[1]) * _UNITS[unit])
