"""Every path, query and header type of the API, defined once.

Routes declare their parameters with these types; the OpenAPI document, the
routing-header checks, the blob keys and the lean fast path all read the same
patterns and bounds from here, so a rule cannot differ between two places.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query

from engines.common.envs import ENVS, LOCAL_MODES, MODES

__all__ = ["ENVS", "LOCAL_MODES", "MODES"]  # the routing values, beside the header types

MAX_ID_LENGTH = 128
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# ID_RE without `..`, written without look-arounds (pydantic's regex engine has none):
# what is_safe_id accepts, as one pattern for path parameters and the OpenAPI document.
SAFE_ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
TENANT_RE = re.compile(r"^t_[a-z0-9_-]+$")
TRACE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
IDEMPOTENCY_KEY_MAX = 255
MAX_REV = 2**53
"""Revisions and replay times stay exact in a JavaScript number."""


def is_safe_id(value: str) -> bool:
    """Ids that may become path segments: no separators, no `..`, bounded length."""
    return bool(ID_RE.match(value)) and ".." not in value


SafeId = Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=MAX_ID_LENGTH)]
"""Any id in a path: canvases, artifacts, assets, webhooks."""
CanvasId = SafeId
ArtifactId = SafeId
Rev = Annotated[int, Query(ge=0, le=MAX_REV, description="canvas revision")]
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
PageCursor = Annotated[str | None, Query(max_length=256, description="opaque; from next_cursor")]
CanvasIdQuery = Annotated[str | None, Query(pattern=SAFE_ID_PATTERN, max_length=MAX_ID_LENGTH)]
