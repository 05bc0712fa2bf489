"""A variant's record id and blob key, both derived from what it is.

The record id comes from (tenant, env, artifact, variant), so finding a
variant is one primary-key read and all of one artifact's share a prefix; the
blob key ends in the rendered bytes' hash, so two renders never overwrite
each other's blob.
"""

from __future__ import annotations

import hashlib

from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.variants.spec import VariantSpec
from engines.storage.keys import canvas_key


def _hex(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def variant_id_prefix(tenant_id: str, env: str, artifact_id: str) -> str:
    """Shared by every variant record of one artifact: `variants_of` is one range scan."""
    return f"mdv{_hex(tenant_id, env, artifact_id)[:20]}"


def variant_record_id(record: ArtifactRecord, spec: VariantSpec) -> str:
    return (variant_id_prefix(record.tenant_id, record.env, record.id)
            + _hex(spec.name)[:12])


def variant_key(record: ArtifactRecord, spec: VariantSpec, sha256: str) -> str:
    """`.../canvas/{canvas}/preview/{artifact_id}.v/{w}x{h}[-qN]-{hash}.{ext}`: beside the
    source, under the tenant's prefix, and never another artifact's key (those have no
    `/` after the kind)."""
    folder = canvas_key(record.tenant_id, record.env, record.canvas_id, "preview",
                        f"{record.id}.v", "")
    stem, ext = spec.name.rsplit(".", 1)
    return f"{folder}/{stem}-{sha256[:16]}.{ext}"
