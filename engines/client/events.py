"""The artifact event as the feed publishes it (SSE `data:`, webhook bodies alike)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

EVENTS_READ_TIMEOUT = 60.0
"""Seconds without a byte (the service sends a heartbeat every 15 s of silence) before a
stream counts as dead and is reopened."""


class Event(BaseModel):
    """`seq` orders a (tenant, env)'s events and is what a stream resumes after;
    `data` holds the artifact's id, kind, rev, type, size, sha256 and uri (and `reason`
    for a deletion)."""

    model_config = ConfigDict(extra="allow")
    v: int
    type: str
    """`artifact_written` or `artifact_deleted`."""
    event_id: str
    seq: int
    ts: datetime
    routing: dict[str, Any]
    ids: dict[str, Any]
    data: dict[str, Any]

    @property
    def artifact_id(self) -> str:
        return str(self.data["artifact_id"])
