"""gc streams: the listing, page by page in key order, against the same key range in the DB.

Before, gc read every referenced key into a set and then asked the store
about every live record's blob one HEAD at a time (10M HEADs at 10M
records). Now memory holds a page and the store is only listed; these tests
pin the behaviour at page boundaries (a page of 2 keys), the key order of
the local store (a directory sorts as `name/`), and the calls made.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from conftest import PNG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import create_preview, created, url
from engines.lifecycle import gc as gc_module
from engines.lifecycle.gc import collect
from engines.storage.base import BlobInfo, BlobStore, StorageUnavailable


class Counting:
    """The stack's store, counting the calls gc makes on it."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.exists_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def exists(self, key: str) -> bool:
        self.exists_calls += 1
        return self.store.exists(key)


def _keys(stack: Stack) -> list[str]:
    return [info.key for info in stack.runtime.store.iter_blobs("tenants/")]


def test_gc_pages_find_every_kind_of_blob_across_page_boundaries(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_module, "PAGE", 2)
    canvas = new_canvas()
    live = [created(create_preview(stack, canvas, rev=i)) for i in range(5)]
    gone = created(create_preview(stack, canvas, rev=9))
    store = stack.runtime.store
    gone_key = store.key_for(gone["uri"])
    assert gone_key is not None
    # the delete tombstones the record; its blob put back is what a failed removal leaves
    path = f"{url(canvas)}/{gone['id']}"
    assert stack.client.delete(path, headers=stack.headers()).status_code == 204
    store.put_bytes(gone_key, PNG, "image/png")
    orphans = [f"tenants/t_acme/dev/canvas/{canvas}/preview/orphan-{i}.png" for i in range(3)]
    for key in orphans:
        store.put_bytes(key, PNG, "image/png")
    missing_key = store.key_for(live[2]["uri"])
    assert missing_key is not None
    store.delete(missing_key)
    counting = Counting(store)
    lines: list[str] = []

    report = collect(counting, stack.runtime.engine, older_than=timedelta(0), apply=False,
                     progress=lines.append)  # type: ignore[arg-type]

    assert sorted(report.orphan_blobs) == orphans
    assert report.deleted_record_blobs == [gone_key]
    assert report.missing_blobs == [live[2]["id"]]
    assert report.scanned == len(_keys(stack)) == 4 + 1 + 3
    assert counting.exists_calls == 0, "gc asked the store about records one by one"
    assert "blobs/s" in lines[-1]


def test_local_listing_is_in_byte_order_like_an_object_store(local: Stack) -> None:
    store = local.runtime.store
    keys = ["tenants/t_a/dev/x/a-b.png", "tenants/t_a/dev/x/a/b.png", "tenants/t_a/dev/x/a.png",
            "tenants/t_a/dev/x/a0.png", "tenants/t_a/dev/x/B.png"]
    for key in keys:
        store.put_bytes(key, PNG, "image/png")
    assert _keys(local) == sorted(keys, key=lambda k: k.encode())


class ListingFails(Counting):
    """The stack's store, whose listing breaks off after its first `pages` pages of keys."""

    def __init__(self, store: BlobStore, pages: int) -> None:
        super().__init__(store)
        self.pages = pages
        self.deleted: list[str] = []

    def iter_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        for n, info in enumerate(self.store.iter_blobs(prefix)):
            if n == self.pages * gc_module.PAGE:
                raise StorageUnavailable(f"{self.store.describe()} unreachable: reset")
            yield info

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.store.delete(key)


def test_a_listing_that_breaks_off_fails_gc_and_deletes_nothing(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next page is listed while this one is checked (in a thread): the store's error
    still ends gc as the outage it is, before anything is removed."""
    monkeypatch.setattr(gc_module, "PAGE", 2)
    store = stack.runtime.store
    canvas = new_canvas()
    for n in range(6):
        store.put_bytes(f"tenants/t_acme/dev/canvas/{canvas}/preview/orphan-{n}.png", PNG,
                        "image/png")
    failing = ListingFails(store, pages=2)
    lines: list[str] = []

    with pytest.raises(StorageUnavailable, match="unreachable: reset"):
        collect(failing, stack.runtime.engine, older_than=timedelta(0), apply=True,  # type: ignore[arg-type]
                force=True, progress=lines.append)

    assert failing.deleted == []
    assert len(_keys(stack)) == 6
    assert lines == []
