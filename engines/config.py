"""Settings from environment variables: the one place configuration is read.

Every knob has a default that runs the embedded setup (local directory +
SQLite), so `engines serve` works on a fresh machine with no env vars at all.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Process-wide configuration; field names map to upper-case env vars."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    raw_bucket: str | None = None
    aws_endpoint_url_s3: str | None = None
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    s3_part_size: int = 8 * MIB
    s3_max_attempts: int = 4
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    media_local_root: Path = Path("./var/media")
    media_serve_mode: Literal["proxy", "redirect"] = "proxy"
    presign_ttl_seconds: int = 300

    database_url: str = "sqlite:///./var/engines.db"
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_timeout: float = 10.0
    db_statement_timeout_ms: int = 30_000
    auto_migrate: bool | None = None

    auth_jwt_signing: str | None = None
    auth_jwt_algorithms: list[str] = ["HS256"]
    auth_jwks_url: str | None = None
    auth_jwks_cache_seconds: int = 300
    # an unknown `kid` refetches the JWKS at most this often, so forged kids cannot hammer the IdP
    auth_jwks_refresh_cooldown_seconds: float = 30.0
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    dev_key_file: Path = Path("./var/dev-signing-key")

    max_preview_bytes: int = 25 * MIB
    max_replay_bytes: int = 50 * MIB
    max_audit_bytes: int = 5 * MIB
    body_idle_timeout: float = 30.0
    max_keyframes: int = 1_000_000
    max_json_depth: int = 64

    # events: SSE feed and webhooks (engines/events)
    events_heartbeat_seconds: float = 15.0
    events_poll_seconds: float = 0.25
    """SQLite only: how often the one poller per process looks for new events."""
    webhooks_enabled: bool = True
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_schedule: list[float] = [5, 30, 120, 600, 3600]
    """Seconds to wait before each retry; after the last one the delivery is failed."""
    webhook_disable_after: int = 5
    """Consecutive failed deliveries after which a subscription is disabled."""
    webhook_poll_seconds: float = 1.0
    webhook_concurrency: int = 8

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        """Migrate on start: on by default for SQLite, off for shared databases."""
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    def signing_key(self) -> str:
        """The HS256 key: AUTH_JWT_SIGNING, else a dev key generated once under var/."""
        if self.auth_jwt_signing:
            return self.auth_jwt_signing
        path = self.dev_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def masked(self) -> dict[str, object]:
        """The settings in effect with secrets hidden, for `engines doctor`."""
        shown = self.model_dump(mode="json")
        if shown.get("auth_jwt_signing"):
            shown["auth_jwt_signing"] = "***"
        shown["database_url"] = _mask_url_password(self.database_url)
        return shown


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given to help debugging
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
