"""media_v2 shapes, as in the engines codebase: assets and their derived artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AssetKind = Literal["video", "audio", "image", "other"]
ArtifactKind = Literal[
    "thumbnail", "proxy", "waveform", "transcript", "audio_stem", "render", "visual_meta",
    "canvas_preview", "canvas_replay", "canvas_audit",
]


class MediaAsset(BaseModel):
    id: str
    tenant_id: str
    env: str
    user_id: str | None = None
    kind: AssetKind
    source_uri: str
    size_bytes: int | None = None
    tags: list[str] = Field(default_factory=list)
    source_ref: str | None = None
    created_at: datetime
    meta: dict[str, Any] = Field(default_factory=dict)


class DerivedArtifact(BaseModel):
    id: str
    parent_asset_id: str
    tenant_id: str
    env: str
    kind: ArtifactKind
    uri: str
    start_ms: int | None = None
    end_ms: int | None = None
    track_label: str | None = None
    created_at: datetime
    meta: dict[str, Any] = Field(default_factory=dict)


class AssetCreate(BaseModel):
    """JSON body of POST /media-v2/assets (a file upload is multipart instead)."""

    model_config = ConfigDict(extra="forbid")
    source_uri: str = Field(min_length=1, max_length=2048)
    kind: AssetKind = "other"
    tags: list[str] = Field(default_factory=list, max_length=64)
    meta: dict[str, Any] = Field(default_factory=dict)


class ArtifactCreate(BaseModel):
    """JSON body of POST /media-v2/assets/{id}/artifacts."""

    model_config = ConfigDict(extra="forbid")
    kind: ArtifactKind
    uri: str = Field(min_length=1, max_length=2048)
    start_ms: int | None = Field(default=None, ge=0)
    end_ms: int | None = Field(default=None, ge=0)
    track_label: str | None = Field(default=None, max_length=128)
    meta: dict[str, Any] = Field(default_factory=dict)


class AssetDetail(BaseModel):
    asset: MediaAsset
    artifacts: list[DerivedArtifact]


class AssetList(BaseModel):
    items: list[MediaAsset]
    next_cursor: str | None = None
