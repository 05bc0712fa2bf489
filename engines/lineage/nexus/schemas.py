"""Nexus documents: the lineage record of everything the engines produce."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class NexusKind(StrEnum):
    canvas_preview = "canvas_preview"
    canvas_replay = "canvas_replay"
    canvas_audit = "canvas_audit"
    media_asset = "media_asset"


class NexusDocument(BaseModel):
    id: str
    tenant_id: str
    env: str
    kind: NexusKind
    subject_id: str = Field(description="the artifact or asset this document describes")
    lineage: dict[str, Any]
    created_at: datetime
