"""Upload leases: an upload in progress proves it is alive, so gc never sweeps it.

A local temporary file's mtime moves once per written batch, an S3
multipart upload's once per part; a slow client can go longer than gc's
grace period between the two. So a long upload renews a lease row every
`UPLOAD_LEASE_SECONDS` while bytes keep arriving (the body idle timeout ends
one that stops), and gc skips every unfinished upload holding a live lease.
Short uploads (the vast majority) finish before their first renewal and cost
no database write at all.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Connection, Engine, String, Table, delete, select

from engines.db.metadata import UtcDateTime, metadata
from engines.db.upsert import upsert
from engines.db.writer import write_transaction

log = logging.getLogger("engines.storage.leases")

upload_leases = Table(
    "upload_leases", metadata,
    Column("key", String(1024), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False),
)

LEASE_PERIODS = 4
"""A lease outlives this many renewal intervals, so one late renewal does not lose it."""


class UploadLeases:
    """Renew and release the leases of this process's uploads."""

    def __init__(self, engine: Engine, interval_seconds: float) -> None:
        self.engine = engine
        self.interval = interval_seconds

    def renew(self, key: str) -> None:
        expires = datetime.now(UTC) + timedelta(seconds=self.interval * LEASE_PERIODS)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(upsert(conn, upload_leases, ["key"]),
                             {"key": key, "expires_at": expires})
        except Exception:  # noqa: BLE001 - the upload goes on; gc may sweep it, it then fails
            log.exception("could not renew the lease of upload %s", key)

    def release(self, key: str) -> None:
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(delete(upload_leases).where(upload_leases.c.key == key))
        except Exception:  # noqa: BLE001 - an expired lease is harmless
            log.exception("could not release the lease of upload %s", key)


def live_leases(conn: Connection, now: datetime) -> set[str]:
    """Keys of uploads that renewed their lease recently: gc keeps them."""
    return set(conn.execute(select(upload_leases.c.key).where(
        upload_leases.c.expires_at > now)).scalars())


def drop_expired(conn: Connection, now: datetime) -> None:
    conn.execute(delete(upload_leases).where(upload_leases.c.expires_at <= now))
