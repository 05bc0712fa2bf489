"""The create protocol (`engines/create.py`): one owner of a create's blob and outcome.

`create_stored` answers `Created` (the record and its 201 body) or `Replayed`
(the key's stored first response), discards the fresh blob when nothing of it
was committed, and maps an unexpected failure to 503 `metadata.write_failed`
for every domain that creates through it (media_v2 used to let it escape as a
500 and keep nothing of the rule).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import pytest

from conftest import PNG, Stack
from engines.create import Created, Replayed, create_stored
from engines.db.idempotency import IdempotencyClaim
from engines.db.metadata import row_exists
from engines.media_v2 import repository as media_repo
from engines.media_v2.models import MediaAsset
from engines.storage.ingest import ingest_bytes
from engines.storage.keys import tenant_prefix


def _tenant() -> str:
    return f"t_c{uuid.uuid4().hex[:10]}"


def _asset(tenant: str, uri: str) -> MediaAsset:
    return MediaAsset(id=f"ma_{uuid.uuid4().hex[:20]}", tenant_id=tenant, env="dev",
                      user_id="u_1", kind="image", source_uri=uri,
                      created_at=datetime.now(UTC))


def test_created_then_replayed_and_the_replays_blob_discarded(stack: Stack) -> None:
    rt, tenant = stack.runtime, _tenant()
    claim = IdempotencyClaim(tenant, "dev", "key-1", "POST /x?", "u_1")

    async def create(key: str) -> tuple[MediaAsset, Created[MediaAsset] | Replayed]:
        blob = await ingest_bytes(rt.store, f"tenants/{tenant}/dev/{key}", PNG, "image/png")
        asset = _asset(tenant, blob.uri)
        outcome = await create_stored(
            rt, asset, asset.model_dump_json().encode(),
            lambda conn: media_repo.insert_asset(conn, asset),
            lambda conn: row_exists(conn, media_repo.assets, asset.id),
            record_id=asset.id, blob=blob, claim=claim, body_sha256="same")
        return asset, outcome

    first_asset, first = anyio.run(create, "first.png")
    assert isinstance(first, Created) and first.record is first_asset
    assert first.response().status_code == 201
    second_asset, second = anyio.run(create, "second.png")
    assert isinstance(second, Replayed)
    assert (second.status, second.body) == (201, first.body)
    assert second.response().headers["idempotent-replayed"] == "true"
    assert rt.store.exists(f"tenants/{tenant}/dev/first.png")
    assert not rt.store.exists(f"tenants/{tenant}/dev/second.png"), "a replay stores nothing"


def test_media_v2_unexpected_write_failure_is_503_and_leaves_no_blob(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = _tenant()

    def broken(conn, asset, *, if_absent: bool = False) -> None:
        raise RuntimeError("the write broke")

    monkeypatch.setattr(media_repo, "insert_asset", broken)
    response = stack.client.post("/media-v2/assets", headers=stack.headers(tenant, "dev"),
                                 files={"file": ("a.png", PNG, "image/png")})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "metadata.write_failed"
    assert list(stack.runtime.store.iter_blobs(tenant_prefix(tenant, "dev"))) == []
