"""Blob keys: the only place user input becomes part of a storage path."""

from __future__ import annotations

import re

from engines.http.params import is_safe_id

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class UnsafeKey(ValueError):
    """A component that could escape its prefix."""


def _component(value: str, what: str) -> str:
    if not is_safe_id(value):
        raise UnsafeKey(f"{what} is not a safe identifier")
    return value


def tenant_prefix(tenant_id: str, env: str) -> str:
    return f"tenants/{_component(tenant_id, 'tenant_id')}/{_component(env, 'env')}/"


def canvas_key(tenant_id: str, env: str, canvas_id: str, kind: str, artifact_id: str,
               extension: str) -> str:
    base = (f"{tenant_prefix(tenant_id, env)}canvas/{_component(canvas_id, 'canvas_id')}/"
            f"{_component(kind, 'kind')}/{_component(artifact_id, 'artifact_id')}")
    return f"{base}.{extension}" if extension else base


def safe_filename(name: str | None) -> str:
    """Reduce a client filename to one harmless path segment."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_CHARS.sub("_", base).strip("._")[:120]
    cleaned = cleaned.replace("..", "_")
    return cleaned or "upload.bin"


def media_key(tenant_id: str, env: str, asset_id: str, filename: str | None) -> str:
    return (f"{tenant_prefix(tenant_id, env)}media_v2/{_component(asset_id, 'asset_id')}/"
            f"{safe_filename(filename)}")
