"""The values routing headers and ENGINES_ENV take, for the settings and the headers alike."""

from __future__ import annotations

ENVS = {"dev": "dev", "staging": "staging", "stage": "staging", "prod": "prod"}
"""X-Env (and ENGINES_ENV) spellings, each to its canonical env."""
MODES = ("saas", "enterprise", "lab")
"""X-Mode values of the later engines contract (docs/routing-mode.md)."""
LOCAL_MODES = frozenset({"lab"})
"""The modes that may use the local store when ROUTING_MODE=mode."""
