"""The record cache: GETs by id answered from memory, never a deleted or foreign record.

Two real `engines serve` processes share one SQLite file and one media
directory (WAL mode, several writer processes). Process B caches a record,
process A deletes it: B answers 404 at the latest RECORD_CACHE_MS after the
delete committed, which is the bound the README states.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from conftest import PNG, SIGNING_KEY, new_canvas
from engines.auth.tokens import issue_token
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.record_cache import (
    MAX_ENTRIES,
    RecordCache,
    key_of,
    record_cache,
    remember,
)
from engines.config import Settings
from tests._server import running_server

TTL_MS = 400


def _headers(tenant: str = "t_acme", role: str = "member") -> dict[str, str]:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=[tenant],
                        role=role, ttl=600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant, "X-Env": "dev",
            "X-Project-Id": "p_main"}


def _record(artifact_id: str = "art_1") -> ArtifactRecord:
    return ArtifactRecord.model_construct(id=artifact_id, tenant_id="t", env="dev",
                                          canvas_id="c", created_at=datetime.now(UTC))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_an_entry_lives_ttl_from_the_start_of_the_read_that_filled_it() -> None:
    clock = FakeClock()
    cache = RecordCache(MAX_ENTRIES, 1.0, clock)
    record = _record()
    started = cache.now()
    clock.t += 0.3  # the database read took 300 ms
    remember(cache, record, started)
    clock.t += 0.69
    assert cache.get(key_of(record)) is record
    clock.t += 0.01  # 1000 ms after the read began
    assert cache.get(key_of(record)) is None


def test_disabled_cache_keeps_nothing_and_memory_is_bounded() -> None:
    off = record_cache(0)
    record = _record()
    remember(off, record, off.now())
    assert off.get(key_of(record)) is None
    cache = record_cache(60_000)
    for n in range(MAX_ENTRIES + 10):
        remember(cache, _record(f"art_{n}"), cache.now())
    assert len(cache) == MAX_ENTRIES
    assert cache.get(key_of(_record("art_0"))) is None
    assert cache.get(key_of(_record(f"art_{MAX_ENTRIES + 9}"))) is not None
    cache.drop(("t", "dev"), f"art_{MAX_ENTRIES + 9}")  # what a deletion event names
    assert cache.get(key_of(_record(f"art_{MAX_ENTRIES + 9}"))) is None


def test_a_delete_in_another_process_is_seen_within_record_cache_ms(tmp_path: Path) -> None:
    env = {"ENGINES_HOME": str(tmp_path / "home"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "RECORD_CACHE_MS": str(TTL_MS)}
    canvas = new_canvas()
    base = f"/canvas/{canvas}/artifacts"
    with running_server(env, tmp_path) as a, running_server(env, tmp_path) as b, \
            httpx.Client(base_url=a.url, headers=_headers(), timeout=30) as ca, \
            httpx.Client(base_url=b.url, headers=_headers(), timeout=30) as cb:
        # concurrent creates through both processes: SQLite's lock is taken across them
        def create(n: int) -> httpx.Response:
            return (ca, cb)[n % 2].post(f"{base}/preview?rev={n}", content=PNG,
                                        headers={"Content-Type": "image/png"})

        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(create, range(40)))
        assert [r.status_code for r in created] == [201] * 40, [
            r.text for r in created if r.status_code != 201][:3]
        artifact_id = created[0].json()["id"]
        assert cb.get(f"{base}/{artifact_id}").status_code == 200  # now cached in B
        assert cb.get(f"{base}/{artifact_id}/content").content == PNG

        # a cached record is still scoped: another tenant never gets it
        other = cb.get(f"{base}/{artifact_id}", headers=_headers("t_other"))
        assert other.status_code == 404

        assert ca.delete(f"{base}/{artifact_id}").status_code == 204
        assert ca.get(f"{base}/{artifact_id}").status_code == 404  # the deleting process: at once
        time.sleep(TTL_MS / 1000)  # the documented bound, nothing more
        assert cb.get(f"{base}/{artifact_id}").status_code == 404
        assert cb.get(f"{base}/{artifact_id}/content").status_code == 404
