"""Migrate a bench database and seed the list scenario's records, with whatever `engines` imports.

`make bench` runs this in-process for the code under test and, with `--against REF`, as a
script under REF's interpreter path (`PYTHONPATH=<REF's worktree> python bench/seed.py`), so
that REF's database is migrated by REF's own migrations. It imports nothing from `bench`
(as a script, `bench` would resolve to REF's copy) and reads the database from the
environment (`DATABASE_URL`, as the service does).

    PYTHONPATH=/tmp/ref DATABASE_URL=sqlite:///x.db python bench/seed.py 100000
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

TENANT, ENV, PROJECT = "t_bench", "dev", "p_bench"
LIST_CANVAS = "c_bench_list"
COLUMNS = ("id", "tenant_id", "env", "canvas_id", "kind", "rev", "project_id", "actor_id",
           "correlation_id", "request_id", "uri", "mime_type", "size_bytes", "sha256",
           "media_asset_id", "media_artifact_id", "created_at", "meta")


def seed_list(engine: Any, rows: int) -> float:
    """`rows` artifact records in one canvas, straight into the table; seconds taken.

    Plain DBAPI executemany with values pre-rendered per dialect: the SQLAlchemy Core
    path costs ~10x more per row, which at 100k rows is most of a minute. One plain
    transaction: nothing else has the database open while the bench seeds it.
    """
    from sqlalchemy import text

    from engines.common.ids import _ALPHABET, _b32

    t0 = time.perf_counter()
    now = datetime.now(UTC)
    pg = engine.dialect.name == "postgresql"
    if pg:
        from psycopg.types.json import Jsonb

        created, meta = now, Jsonb({})
    else:
        created, meta = now.strftime("%Y-%m-%d %H:%M:%S.%f"), "{}"
    mark = "%s" if pg else "?"
    sql = (f"INSERT INTO canvas_artifacts ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join([mark] * len(COLUMNS))})")
    rng = random.Random(5)
    batch = 10_000
    first_ms = time.time_ns() // 1_000_000 - rows  # one id per millisecond, time-ordered
    prefix = f"s3://seed/tenants/{TENANT}/{ENV}/canvas/{LIST_CANVAS}/"
    with engine.begin() as conn:
        for start in range(0, rows, batch):
            values = []
            for i in range(start, min(rows, start + batch)):
                art = f"art_{_b32(first_ms + i, 10)}{''.join(rng.choices(_ALPHABET, k=16))}"
                values.append((art, TENANT, ENV, LIST_CANVAS,
                               ("preview", "replay", "audit")[i % 3], i // 3, PROJECT,
                               "u_bench", art, art, f"{prefix}{art}.png", "image/png", 65536,
                               "0" * 64, "mca_seed", "mda" + art[3:], created, meta))
            conn.exec_driver_sql(sql, values)
        if pg:
            # autovacuum would have analysed a table this size in production
            conn.execute(text("ANALYZE canvas_artifacts"))
    return time.perf_counter() - t0


def prepare(settings: Any, rows: int) -> float:
    """Migrate (Alembic, in-process) and seed; the seed's seconds."""
    from engines.db.engine import build_engine
    from engines.db.migrate import upgrade

    engine = build_engine(settings)
    try:
        upgrade(engine)
        return seed_list(engine, rows)
    finally:
        engine.dispose()


def main(argv: list[str]) -> None:
    from engines.config import get_settings

    print(f"{prepare(get_settings(), int(argv[0])):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
