"""DatasetEvent: the append-only event that announces a new (or deleted) dataset item."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class DatasetEvent(BaseModel):
    id: str
    tenant_id: str
    env: str
    event_type: str
    subject_id: str
    document_id: str
    lineage: dict[str, Any]
    created_at: datetime
    seq: int | None = None
    """Position in the (tenant_id, env) feed; assigned by the backend when it writes."""
