"""DatasetEvent: the append-only event that announces a new (or deleted) dataset item.

Types are `canvas.{kind}.{created|deleted|expired}` for artifacts, plus one
that names no item: `tenant.purged`, written by `engines purge` once per
(tenant, env) it erased, so that every running process drops what it caches
of that scope (engines/common/cache.py). It is not published on SSE or to
webhooks (engines/events/feed.py publishes `canvas.` types only); a stream
just moves its cursor past its seq.
"""

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


SCOPE_PURGED = "tenant.purged"
GONE = (".deleted", ".expired")
"""Endings of the artifact event types after which the artifact is gone."""


def drops_caches(event_type: str) -> bool:
    """Whether readers of this event must forget what they cache of its subject (an
    artifact deleted or expired) or of its whole scope (a purge)."""
    return event_type == SCOPE_PURGED or (event_type.startswith("canvas.")
                                          and event_type.endswith(GONE))
