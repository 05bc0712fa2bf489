"""Canvas artifact shapes at the HTTP edge: records, replays, audits, render-refs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.schemas import NexusDocument

ArtifactKindName = Literal["preview", "replay", "audit"]
KINDS: tuple[str, ...] = get_args(ArtifactKindName)
ALL_ENVS = "*"
"""A per-tenant setting (retention override, quota) that holds in every env."""


class ArtifactRecord(BaseModel):
    id: str
    kind: ArtifactKindName
    canvas_id: str
    rev: int
    tenant_id: str
    env: str
    workspace_id: str | None = None
    project_id: str
    surface_id: str | None = None
    app_id: str | None = None
    actor_id: str
    correlation_id: str
    request_id: str
    uri: str
    mime_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    media_asset_id: str
    media_artifact_id: str
    created_at: datetime
    meta: dict[str, Any] = Field(default_factory=dict)


class ArtifactList(BaseModel):
    items: list[ArtifactRecord]
    next_cursor: str | None = None


class Lineage(BaseModel):
    """An artifact's Nexus lineage: its document(s) and the events announcing it."""

    artifact_id: str
    documents: list[NexusDocument]
    events: list[DatasetEvent]


class SignedUrl(BaseModel):
    """A header-free content URL (POST .../signed-url), valid until `expires_at`."""

    url: str
    expires_at: datetime


class RenderRef(BaseModel):
    """A preview that points at a render which already exists."""

    model_config = ConfigDict(extra="forbid")
    uri: str = Field(min_length=1, max_length=2048)
    # no control characters: the record goes to PostgreSQL, which cannot store a NUL
    mime_type: str | None = Field(default=None, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")


MAX_INT = 2**53
"""The largest integer a JSON client (JavaScript) holds exactly, well inside BIGINT."""


class Keyframe(BaseModel):
    """The schema of a keyframe; `replay_ingest.check_keyframe` enforces it, one at a time."""

    model_config = ConfigDict(extra="allow")
    t_ms: StrictInt = Field(ge=0, le=MAX_INT)
    rev: StrictInt | None = Field(default=None, ge=0, le=MAX_INT)
    type: Literal["snapshot", "commit", "gesture"]
    data: dict[str, Any] = Field(default_factory=dict)


class ReplayDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    # the bound of ?rev= on the other creates; beyond it the BIGINT column overflows (503)
    rev: StrictInt = Field(ge=0, le=MAX_INT)
    rev_from: StrictInt | None = Field(default=None, ge=0, le=MAX_INT)
    mode: Literal["keyframes", "full"] = "keyframes"
    keyframes: list[Keyframe]
    summary: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _revs_in_order(self) -> ReplayDocument:
        """A replay runs from rev_from to rev: it cannot start after it ends.

        (The keyframes' own order and revs are checked one at a time while the
        body is read, see `replay_ingest`; they are never all in this model.)
        """
        if self.rev_from is not None and self.rev_from > self.rev:
            raise ValueError(f"rev_from ({self.rev_from}) is greater than rev ({self.rev})")
        return self


class AuditSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    errors: StrictInt = Field(ge=0)
    warnings: StrictInt = Field(ge=0)


class AuditReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1]
    kind: str = Field(min_length=1, max_length=64)
    status: Literal["pending", "running", "passed", "failed", "error"]
    checks: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    summary: AuditSummary
    generated_at: datetime
