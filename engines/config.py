"""Settings from environment variables: the one place configuration is read.

Every knob has a default that runs the embedded setup (local directory +
SQLite), so `engines serve` works on a fresh machine with no env vars at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


def _duration_or_none(value: Any) -> Any:
    """`RETENTION_REPLAY=30d`; unset or empty means keep forever."""
    from engines.common.durations import parse_duration

    if isinstance(value, str):
        return parse_duration(value) if value.strip() else None
    return value


Retention = Annotated[timedelta | None, BeforeValidator(_duration_or_none)]
def default_home() -> Path:
    """Where the embedded default keeps its state when ENGINES_HOME is unset.

    A source checkout (the `make run` case) uses its own `var/`, wherever the
    command is run from; an installed package uses `~/.local/share/northstar-engines`.
    Never the current directory: a server and an `engines token` started from
    different places must find the same dev key.
    """
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "var"
    return Path.home() / ".local" / "share" / "northstar-engines"


class Settings(BaseSettings):
    """Process-wide configuration; field names map to upper-case env vars."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    engines_home: Path = Field(default_factory=default_home)
    raw_bucket: str | None = None
    aws_endpoint_url_s3: str | None = None
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    s3_part_size: int = 8 * MIB
    s3_max_attempts: int = 4
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    media_local_root: Path = Field(default_factory=lambda data: data["engines_home"] / "media")
    media_serve_mode: Literal["proxy", "redirect"] = "proxy"
    # routing generations (docs/routing-mode.md): `env` reads X-Env as the seed does;
    # `mode` requires X-Mode (saas|enterprise|lab), refuses X-Env, and takes the env
    # from ENGINES_ENV, the service's own
    routing_mode: Literal["env", "mode"] = "env"
    engines_env: str = "dev"
    presign_ttl_seconds: int = 300
    upload_lease_seconds: float = 60.0
    # upload sessions (docs/uploads.md): how long one stays open, and its part size
    upload_session_seconds: int = Field(default=86_400, ge=60, le=7 * 86_400)
    upload_part_bytes: int = Field(default=8 * MIB, ge=5 * MIB, le=5 * 1024 * MIB)
    gc_max_delete_share: float = Field(default=0.10, ge=0.0, le=1.0)

    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['engines_home'] / 'engines.db'}")
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
    dev_key_file: Path = Field(
        default_factory=lambda data: data["engines_home"] / "dev-signing-key")

    max_preview_bytes: int = 25 * MIB
    max_replay_bytes: int = 50 * MIB
    max_audit_bytes: int = 5 * MIB
    body_idle_timeout: float = 30.0
    # request heads and connections, enforced by engines.server's uvicorn protocol
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    max_keyframes: int = 1_000_000
    # one keyframe is parsed whole: this bounds the memory a replay create can take
    max_keyframe_bytes: int = 1 * MIB
    max_json_depth: int = 64
    # how long a process may answer GETs of a record from memory: the bound on how late
    # it sees a delete made by another process (engines/canvas_artifacts/record_cache.py)
    record_cache_ms: int = Field(default=1000, ge=0)

    # signed content URLs and image variants (issue 11)
    url_signing_key: str | None = None
    public_base_url: str | None = None
    image_transforms: bool = True
    image_sizes: Annotated[list[int], NoDecode] = [64, 128, 256, 512, 1024, 2048]
    max_image_pixels: int = 50_000_000

    @field_validator("engines_env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        """ENGINES_ENV as X-Env accepts it (`stage` is `staging`), stored canonical."""
        from engines.common.identity import ENVS

        env = ENVS.get(value.lower())
        if env is None:
            raise ValueError("ENGINES_ENV must be one of dev, staging, prod")
        return env

    @property
    def local_store_forbidden_outside_lab(self) -> bool:
        """ROUTING_MODE=mode without RAW_BUCKET: only `lab` may use the local store."""
        return self.routing_mode == "mode" and not self.raw_bucket

    @field_validator("image_sizes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """IMAGE_SIZES=64,128,256 as an operator writes it, not as a JSON list."""
        if isinstance(value, str):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    retention_preview: Retention = None
    retention_replay: Retention = None
    retention_audit: Retention = None
    # the newest artifact of each kind of a canvas survives retention, however old
    retention_keep_latest: bool = True

    def retention_for(self, kind: str) -> timedelta | None:
        return {"preview": self.retention_preview, "replay": self.retention_replay,
                "audit": self.retention_audit}[kind]

    # observability (engines/observability): see README "Metrics, logs, traces"
    log_format: Literal["json", "text"] = "json"
    metrics_enabled: bool = True
    metrics_tenant_labels: bool = False
    otel_exporter_otlp_endpoint: str | None = None

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
        """The HS256 key: AUTH_JWT_SIGNING, else a dev key generated once in ENGINES_HOME."""
        if self.auth_jwt_signing:
            return self.auth_jwt_signing
        path = self.dev_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def url_key(self) -> bytes:
        """The signed-URL HMAC key: URL_SIGNING_KEY, else derived from (never equal to)
        the JWT key, so a signed URL can never be replayed as a token or vice versa."""
        if self.url_signing_key:
            return self.url_signing_key.encode()
        return hmac.new(self.signing_key().encode(), b"engines/signed-url/v1",
                        hashlib.sha256).digest()

    def masked(self) -> dict[str, object]:
        """The settings in effect with secrets hidden, for `engines doctor`."""
        shown = self.model_dump(mode="json")
        for secret in ("auth_jwt_signing", "url_signing_key"):
            if shown.get(secret):
                shown[secret] = "***"
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
