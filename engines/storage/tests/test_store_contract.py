"""What every BlobStore promises, run against each backend (local dir, S3 via moto)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_bucket
from engines.config import Settings
from engines.storage.base import BlobNotFound, BlobStore
from engines.storage.local import LocalBlobStore
from engines.storage.s3 import S3BlobStore
from engines.storage.tests._support import KEY, png_body


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "media")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3BlobStore(Settings(raw_bucket=make_bucket(endpoint), aws_endpoint_url_s3=endpoint,
                                s3_max_attempts=2))


def test_ranged_reads(any_store: BlobStore) -> None:
    data = png_body(1000)
    any_store.put_bytes(KEY, data, "image/png")

    assert b"".join(any_store.read(KEY, 10, 19)) == data[10:20]
    assert b"".join(any_store.read(KEY, 990)) == data[990:]
    assert b"".join(any_store.read(KEY, 0, 0)) == data[:1]


def test_missing_key(any_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        any_store.read_all(KEY)
    assert not any_store.exists(KEY)
    any_store.delete(KEY)  # deleting what is not there is fine
