"""Pick the blob store from config, like MLflow picks an artifact repository."""

from __future__ import annotations

from engines.config import Settings
from engines.storage.base import BlobStore


def build_blob_store(settings: Settings) -> BlobStore:
    """RAW_BUCKET set -> S3 through boto3; otherwise the local directory."""
    if settings.raw_bucket:
        from engines.storage.s3 import S3BlobStore

        return S3BlobStore(settings)
    from engines.storage.local import LocalBlobStore

    return LocalBlobStore(settings.media_local_root)
