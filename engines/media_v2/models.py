"""media_v2 shapes, as in the engines codebase: assets and their derived artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

AssetKind = Literal["video", "audio", "image", "other"]
ArtifactKind = Literal[
    "thumbnail", "proxy", "waveform", "transcript", "audio_stem", "render", "visual_meta",
    "canvas_preview", "canvas_replay", "canvas_audit", "canvas_preview_variant",
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


# The largest integer a JSON client (JavaScript) holds exactly; well inside BIGINT, so an
# out-of-range offset is a 422 here rather than an overflow inside the database.
MAX_MS = 2**53


def reject_nul(value: Any) -> Any:
    """Refuse U+0000 anywhere in a JSON value (keys included).

    PostgreSQL text and JSONB cannot store it, so letting it through turns a
    client's bad input into a database error, reported as a 503 outage.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain NUL (U+0000) characters")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


Text = Annotated[str, AfterValidator(reject_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(reject_nul)]


class AssetCreate(BaseModel):
    """JSON body of POST /media-v2/assets (a file upload is multipart instead)."""

    model_config = ConfigDict(extra="forbid")
    source_uri: str = Field(min_length=1, max_length=2048)
    kind: AssetKind = "other"
    tags: list[Text] = Field(default_factory=list, max_length=64)
    meta: JsonObject = Field(default_factory=dict)


class ArtifactCreate(BaseModel):
    """JSON body of POST /media-v2/assets/{id}/artifacts."""

    model_config = ConfigDict(extra="forbid")
    kind: ArtifactKind
    uri: str = Field(min_length=1, max_length=2048)
    start_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    end_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    track_label: Text | None = Field(default=None, max_length=128)
    meta: JsonObject = Field(default_factory=dict)


class AssetDetail(BaseModel):
    asset: MediaAsset
    artifacts: list[DerivedArtifact]


class AssetList(BaseModel):
    items: list[MediaAsset]
    next_cursor: str | None = None
