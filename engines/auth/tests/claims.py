"""The token claims the identity tests start from, shared by every token they craft."""

from __future__ import annotations

import time
from typing import Any


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid member of t_acme for ten minutes; an override of None drops the claim."""
    now = int(time.time())
    values: dict[str, Any] = {"sub": "u_ana", "tenant_ids": ["t_acme"],
                              "default_tenant_id": "t_acme", "role_map": {"t_acme": "member"},
                              "iat": now, "exp": now + 600}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}
