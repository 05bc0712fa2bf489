"""Seed a PostgreSQL database with N canvas artifact records, by COPY, in resumable pieces.

What a tenant a year into using the service has (at N = 10,000,000):

| tenant | records | canvases |
| --- | --- | --- |
| `t_main` | 82%: four hot canvases of N/100 (100k) each, the rest over 80% of canvases | 164k |
| `t_purge` | 10%: the tenant `engines purge` removes in the benchmark | 20k |
| `t_other1`..`t_other8` | 1% each: the nine "other tenants" beside it, with `t_main` | 2k each |

Canvas sizes fall off like a Zipf law (a few canvases with thousands of
artifacts, a long tail of small ones); kinds are 70% preview, 20% audit,
10% replay (the hot canvases hold previews and audits only: their export
streams stored bytes); `created_at` is spread over the year before the
seed's fixed epoch, and ids carry it (ids are time-ordered, as the service
makes them); `rev` grows with time; 2% of records are deleted (a tombstone,
its media_v2 artifact tombstoned too, and a `.deleted` event).

Every record has its media_v2 DerivedArtifact, its NexusDocument and its
`created` DatasetEvent (with `seq`); each canvas its media_v2 asset. Blobs:
N/10 distinct keys. A tenant's first records (in plan order) own a key of
the canonical form `tenants/{t}/prod/canvas/{c}/{kind}/{id}.png`; the others
point at one of those, so every key is referenced and gc sees N/10 keys to
list. The keys are written to `keys-{piece}.txt` in the state directory, for
the S3 server (`bench/s3_server.py`) to hold.

Everything about a record is a pure function of (tenant, ordinal), so a
piece can be (re)made on its own: a piece is one transaction that COPYs its
rows into every table and marks itself done in `bench_seed_pieces`, and a
seed that was stopped resumes at the first piece not marked. Secondary
indexes, primary keys and foreign keys are dropped before the load and
rebuilt after it (each rebuild a step marked done too; `REBUILDERS` at a time), then
VACUUM ANALYZE.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from engines.canvas_artifacts.commit import canvas_asset_id

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
"""`created_at` spans the year before this: fixed, so a resumed seed makes the same rows."""
YEAR_MS = 365 * 24 * 3600 * 1000
ENV = "prod"
BLOB = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
BLOB_SHA256 = hashlib.sha256(BLOB).hexdigest()
MEDIA_KIND = {"preview": "canvas_preview", "replay": "canvas_replay", "audit": "canvas_audit"}
MIME = {"preview": "image/png", "replay": "application/json", "audit": "application/json"}
HOT = ("c_hot_export", "c_hot_delete", "c_hot_read", "c_hot_spare")
MAIN, PURGED = "t_main", "t_purge"
OTHERS = tuple(f"t_other{i}" for i in range(1, 9))
PIECE_RECORDS = 200_000
BIG_TABLES = ("canvas_artifacts", "media_v2_artifacts", "nexus_documents", "dataset_events",
              "media_v2_assets")
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_B32[value & 31])
        value >>= 5
    return "".join(reversed(out))


# ---- the plan: tenants, canvases, record counts --------------------------------------------


@dataclass(frozen=True)
class Canvas:
    tenant: str
    canvas_id: str
    first: int
    """Tenant-local ordinal of the canvas's first record."""
    count: int
    hot: bool


@dataclass
class Plan:
    records: int
    blobs: int
    canvases: list[Canvas]
    tenant_records: dict[str, int]
    tenant_blobs: dict[str, int]

    def __post_init__(self) -> None:
        self._firsts: dict[str, tuple[list[int], list[Canvas]]] = {}
        for canvas in self.canvases:
            starts, found = self._firsts.setdefault(canvas.tenant, ([], []))
            starts.append(canvas.first)
            found.append(canvas)

    def canvas_of(self, tenant: str, ordinal: int) -> Canvas:
        starts, found = self._firsts[tenant]
        return found[bisect.bisect_right(starts, ordinal) - 1]

    def pieces(self) -> list[list[Canvas]]:
        """Consecutive canvases, about PIECE_RECORDS records each (a hot canvas is one piece)."""
        out: list[list[Canvas]] = [[]]
        size = 0
        for canvas in self.canvases:
            if size and size + canvas.count > PIECE_RECORDS:
                out.append([])
                size = 0
            out[-1].append(canvas)
            size += canvas.count
        return out


def _zipf_sizes(total: int, canvases: int) -> list[int]:
    weights = [1 / (i + 20) ** 0.9 for i in range(canvases)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += total - sum(sizes)
    while sizes[-1] < 1:  # rounding up the tail overshot: take it back from the head
        spill = 1 - sizes[-1]
        sizes[-1] = 1
        sizes[0] -= spill
    return sizes


def make_plan(records: int) -> Plan:
    hot = max(1, records // 100)
    shares = {MAIN: records - records // 10 - 8 * (records // 100), PURGED: records // 10,
              **{t: records // 100 for t in OTHERS}}
    canvas_total = max(len(shares) * 10, records // 50)
    canvases: list[Canvas] = []
    for tenant, count in shares.items():
        spread = count - (len(HOT) * hot if tenant == MAIN else 0)
        n_canvases = max(1, round(canvas_total * spread / records))
        ordinal = 0
        if tenant == MAIN:
            for name in HOT:
                canvases.append(Canvas(tenant, name, ordinal, hot, True))
                ordinal += hot
        for index, size in enumerate(_zipf_sizes(spread, n_canvases)):
            canvases.append(Canvas(tenant, f"c_{tenant[2:]}_{index:06d}", ordinal, size, False))
            ordinal += size
    blobs = max(1, records // 10)
    tenant_blobs = {t: max(1, round(blobs * n / records)) for t, n in shares.items()}
    return Plan(records, sum(tenant_blobs.values()), canvases, shares, tenant_blobs)


# ---- one record, from (tenant, ordinal) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    artifact_id: str
    kind: str
    created_ms: int
    deleted: bool
    noise: int


def facts(plan: Plan, tenant: str, ordinal: int, canvas: Canvas) -> Facts:
    digest = int.from_bytes(hashlib.blake2b(f"{tenant}/{ordinal}".encode(),
                                            digest_size=16).digest(), "big")
    created_ms = int(EPOCH.timestamp() * 1000) - YEAR_MS + digest % YEAR_MS
    pick = (digest >> 40) % 100
    if canvas.hot:
        kind = "preview" if pick < 75 else "audit"
    else:
        kind = "preview" if pick < 70 else ("audit" if pick < 90 else "replay")
    deleted = (digest >> 50) % 50 == 0
    noise = digest >> 48
    return Facts(f"cva_{_b32(created_ms, 10)}{_b32(noise, 16)}", kind, created_ms, deleted, noise)


def blob_key(plan: Plan, tenant: str, ordinal: int) -> str:
    """The key record `ordinal` points at: its own if it is one of the tenant's first
    `tenant_blobs` records, else the key of one of those."""
    owner = ordinal % plan.tenant_blobs[tenant]
    canvas = plan.canvas_of(tenant, owner)
    f = facts(plan, tenant, owner, canvas)
    return f"tenants/{tenant}/{ENV}/canvas/{canvas.canvas_id}/{f.kind}/{f.artifact_id}.png"


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _json(value: object) -> str:
    # COPY's text format: JSON from orjson has no tab or newline; backslashes are doubled
    return orjson.dumps(value).decode().replace("\\", "\\\\")


class Rows:
    """Tab-separated COPY lines per table, for one piece."""

    def __init__(self) -> None:
        self.out = {table: io.StringIO() for table in BIG_TABLES}

    def add(self, table: str, *values: object) -> None:
        self.out[table].write("\t".join(r"\N" if v is None else str(v) for v in values) + "\n")


def piece_rows(plan: Plan, bucket: str, canvases: list[Canvas],
               keys: Callable[[str], None]) -> Rows:
    rows = Rows()
    for canvas in canvases:
        tenant = canvas.tenant
        asset_id = canvas_asset_id(tenant, ENV, canvas.canvas_id)
        first_ms = int(EPOCH.timestamp() * 1000) - YEAR_MS
        rows.add("media_v2_assets", asset_id, tenant, ENV, "u_seed", "other",
                 f"canvas://{canvas.canvas_id}", None, "[]", f"canvas:{canvas.canvas_id}",
                 _ts(first_ms), _json({"canvas_id": canvas.canvas_id}))
        for ordinal in range(canvas.first, canvas.first + canvas.count):
            _record(plan, bucket, rows, canvas, asset_id, ordinal, keys)
    return rows


def _record(plan: Plan, bucket: str, rows: Rows, canvas: Canvas, asset_id: str,
            ordinal: int, keys: Callable[[str], None]) -> None:
    tenant = canvas.tenant
    f = facts(plan, tenant, ordinal, canvas)
    if ordinal < plan.tenant_blobs[tenant]:
        key = f"tenants/{tenant}/{ENV}/canvas/{canvas.canvas_id}/{f.kind}/{f.artifact_id}.png"
        keys(key)
    else:
        key = blob_key(plan, tenant, ordinal)
    uri = f"s3://{bucket}/{key}"
    rev = (f.created_ms // 1000) // 600
    created = _ts(f.created_ms)
    deleted_at = _ts(f.created_ms + 60_000) if f.deleted else None
    suffix = f.artifact_id[4:]
    media_id, doc_id, event_id = f"mda_{suffix}", f"nxd_{suffix}", f"dse_{suffix}"
    req, cor = f"req_{suffix}", f"cor_{suffix}"
    mime = MIME[f.kind]
    rows.add("canvas_artifacts", f.artifact_id, tenant, ENV, canvas.canvas_id, f.kind, rev,
             "w_main", "p_main", None, None, "u_seed", cor, req, uri, mime, len(BLOB),
             BLOB_SHA256, asset_id, media_id, created, "{}", deleted_at)
    rows.add("media_v2_artifacts", media_id, asset_id, tenant, ENV, MEDIA_KIND[f.kind], uri,
             None, None, None, created,
             _json({"canvas_id": canvas.canvas_id, "rev": rev, "artifact_id": f.artifact_id,
                    "mime_type": mime, "sha256": BLOB_SHA256, "size_bytes": len(BLOB)}),
             deleted_at)
    lineage = {"tenant_id": tenant, "env": ENV, "workspace_id": "w_main", "project_id": "p_main",
               "canvas_id": canvas.canvas_id, "rev": rev, "correlation_id": cor,
               "request_id": req, "actor_id": "u_seed", "artifact_id": f.artifact_id,
               "uri": uri, "kind": f.kind, "mime_type": mime, "sha256": BLOB_SHA256,
               "size_bytes": len(BLOB), "media_asset_id": asset_id,
               "media_artifact_id": media_id, "created_at": created}
    text = _json(lineage)
    rows.add("nexus_documents", doc_id, tenant, ENV, MEDIA_KIND[f.kind], f.artifact_id, text,
             created)
    # seq: created events 1..R in plan order, deletion events R+1+ordinal (unique, sparse)
    rows.add("dataset_events", event_id, tenant, ENV, f"canvas.{f.kind}.created",
             f.artifact_id, doc_id, text, created, ordinal + 1)
    if f.deleted:
        gone = _json({**lineage, "reason": "deleted", "deleted_at": deleted_at})
        rows.add("dataset_events", f"dsx_{suffix}", tenant, ENV, f"canvas.{f.kind}.deleted",
                 f.artifact_id, doc_id, gone, deleted_at,
                 plan.tenant_records[tenant] + 1 + ordinal)


COLUMNS = {
    "media_v2_assets": "id, tenant_id, env, user_id, kind, source_uri, size_bytes, tags, "
                       "source_ref, created_at, meta",
    "canvas_artifacts": "id, tenant_id, env, canvas_id, kind, rev, workspace_id, project_id, "
                        "surface_id, app_id, actor_id, correlation_id, request_id, uri, "
                        "mime_type, size_bytes, sha256, media_asset_id, media_artifact_id, "
                        "created_at, meta, deleted_at",
    "media_v2_artifacts": "id, parent_asset_id, tenant_id, env, kind, uri, start_ms, end_ms, "
                          "track_label, created_at, meta, deleted_at",
    "nexus_documents": "id, tenant_id, env, kind, subject_id, lineage, created_at",
    "dataset_events": "id, tenant_id, env, event_type, subject_id, document_id, lineage, "
                      "created_at, seq",
}


# ---- the seed, step by step ----------------------------------------------------------------


def _state(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS bench_seed (name text PRIMARY KEY, value text)")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_seed_pieces (piece int PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_seed_ddl "
                 "(step int PRIMARY KEY, sql text NOT NULL, done boolean NOT NULL)")


def _drop_for_load(conn: psycopg.Connection) -> None:
    """Remember, then drop, every index and key of the big tables (rebuilt after the load)."""
    if conn.execute("SELECT count(*) FROM bench_seed_ddl").fetchone()[0]:
        return
    tables = list(BIG_TABLES)
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype "
        "FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s) AND contype IN ('p','f')",
        [tables]).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid::regclass::text = ANY(%s) AND NOT i.indisprimary", [tables]).fetchall()
    steps = ([f"ALTER TABLE {t} ADD CONSTRAINT {n} {d}" for t, n, d, k in constraints if k == "p"]
             + [f"ALTER TABLE {t} ADD CONSTRAINT {n} {d}" for t, n, d, k in constraints
                if k == "f"]
             + [d for _n, d in indexes])
    for index, sql in enumerate(steps):
        conn.execute("INSERT INTO bench_seed_ddl VALUES (%s, %s, false)", [index, sql])
    for table, name, _d, _kind in sorted(constraints, key=lambda c: c[3] != "f"):
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for name, _d in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.commit()


def _load(conn: psycopg.Connection, plan: Plan, bucket: str, state_dir: Path,
          log: Callable[[str], None]) -> None:
    done = {r[0] for r in conn.execute("SELECT piece FROM bench_seed_pieces")}
    pieces = plan.pieces()
    started, loaded = time.monotonic(), 0
    for number, canvases in enumerate(pieces):
        if number in done:
            continue
        key_file = state_dir / f"keys-{number}.txt"
        with open(key_file, "w") as keys:
            rows = piece_rows(plan, bucket, canvases, lambda k: keys.write(k + "\n"))
        with conn.transaction():
            with conn.cursor() as cur:
                for table in BIG_TABLES:
                    with cur.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                        data = rows.out[table].getvalue()
                        for at in range(0, len(data), 1 << 20):
                            copy.write(data[at:at + (1 << 20)])
            conn.execute("INSERT INTO bench_seed_pieces VALUES (%s)", [number])
        conn.commit()  # the reads above opened a transaction: conn.transaction() was a savepoint
        loaded += sum(c.count for c in canvases)
        rate = loaded / max(1e-9, time.monotonic() - started)
        log(f"seed: piece {number + 1}/{len(pieces)} committed ({loaded:,} records this run, "
            f"{rate:,.0f} records/s)")


REBUILDERS = 3
"""Sessions rebuilding at once. The secondary indexes of one table go side by side: their
heap scans synchronise (PostgreSQL's `synchronize_seqscans`), so a 10M-row table is read
from disk about once for all of them, where one at a time read it once per index."""


def _run_step(dsn: str, step: int, sql: str, log: Callable[[str], None]) -> None:
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(sql)
        conn.execute("UPDATE bench_seed_ddl SET done = true WHERE step = %s", [step])
    log(f"seed: {sql[:90]} ... {time.monotonic() - started:.0f} s")


def _rebuild(dsn: str, conn: psycopg.Connection, log: Callable[[str], None]) -> None:
    """Primary keys, then secondary indexes, REBUILDERS at a time in table order, then
    foreign keys one by one (each locks its two tables against the index builds)."""
    steps = conn.execute("SELECT step, sql FROM bench_seed_ddl WHERE NOT done ORDER BY step"
                         ).fetchall()
    conn.commit()
    foreign = [s for s in steps if "FOREIGN KEY" in s[1]]
    primary = [s for s in steps if "PRIMARY KEY" in s[1]]
    indexes = sorted((s for s in steps if s not in foreign and s not in primary),
                     key=lambda s: s[1].partition(" ON ")[2])
    for group, width in ((primary, REBUILDERS), (indexes, REBUILDERS), (foreign, 1)):
        with ThreadPoolExecutor(width) as pool:
            for done in [pool.submit(_run_step, dsn, step, sql, log) for step, sql in group]:
                done.result()


def _sequences(conn: psycopg.Connection, plan: Plan) -> None:
    for tenant, count in plan.tenant_records.items():
        conn.execute("INSERT INTO event_sequences (tenant_id, env, last_seq) VALUES (%s, %s, %s) "
                     "ON CONFLICT (tenant_id, env) DO UPDATE SET last_seq = excluded.last_seq",
                     [tenant, ENV, 2 * count + 1])
    conn.commit()


def _mark(conn: psycopg.Connection, name: str, value: str = "1") -> None:
    conn.execute("INSERT INTO bench_seed VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                 "SET value = excluded.value", [name, value])
    conn.commit()


def _marked(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM bench_seed WHERE name = %s", [name]).fetchone()
    return row[0] if row else None


def seed(dsn: str, records: int, bucket: str, state_dir: Path,
         log: Callable[[str], None] = print) -> Plan:
    """Bring the database to the full seed of `records` records; resumes where it stopped.
    The database must be migrated to head; `bucket` is the one the URIs name."""
    plan = make_plan(records)
    state_dir.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(dsn) as conn:
        _state(conn)
        conn.commit()
        for name, value in (("records", str(records)), ("bucket", bucket)):
            found = _marked(conn, name)
            if found is not None and found != value:
                raise SystemExit(f"this database was seeded with {name}={found}, not {value}")
            _mark(conn, name, value)
        if _marked(conn, "complete"):
            log(f"seed: complete already ({records:,} records)")
            return plan
        _drop_for_load(conn)
        _load(conn, plan, bucket, state_dir, log)
        _sequences(conn, plan)
        _rebuild(dsn, conn, log)
        conn.autocommit = True
        for table in BIG_TABLES:
            started = time.monotonic()
            conn.execute(f"VACUUM (ANALYZE) {table}")
            log(f"seed: VACUUM ANALYZE {table} {time.monotonic() - started:.0f} s")
        conn.autocommit = False
        _mark(conn, "complete")
    return plan


def keys(state_dir: Path) -> Iterator[str]:
    """Every blob key the seed's records point at (the S3 server holds these)."""
    for path in sorted(state_dir.glob("keys-*.txt")):
        with open(path) as fh:
            for line in fh:
                yield line.rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True, help="a migrated database (psycopg DSN)")
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    seed(args.dsn, args.records, args.bucket, args.state_dir,
         lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

