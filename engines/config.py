"""Settings from environment variables: the one place configuration is read.

Every knob has a default that runs the embedded setup (local directory +
SQLite), so `engines serve` works on a fresh machine with no env vars at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engines.common.envs import ENVS

MIB = 1024 * 1024
DEV_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Where the embedded default is reached: signed URLs may name them on the dev key."""
NO_DEV_KEY_HERE = (
    "AUTH_JWT_SIGNING is not set: a dev key is made and used only on the embedded default "
    "(SQLite and a local directory), and this setup uses PostgreSQL or S3; set AUTH_JWT_SIGNING "
    "(or AUTH_JWKS_URL) to the key your tokens are signed with")


def _duration_or_none(value: Any) -> Any:
    """`RETENTION_REPLAY=30d`; unset or empty means keep forever."""
    from engines.common.durations import parse_duration

    if isinstance(value, str):
        return parse_duration(value) if value.strip() else None
    return value


Retention = Annotated[timedelta | None, BeforeValidator(_duration_or_none)]
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
"""scheme://host[:port], as a browser sends it in `Origin` (an IPv6 host in brackets)."""


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
    # a token without `exp` would be valid forever: refused (401) unless this is true
    auth_allow_no_exp: bool = False
    auth_jwt_audience: str | None = None
    dev_key_file: Path = Field(
        default_factory=lambda data: data["engines_home"] / "dev-signing-key")

    max_preview_bytes: int = 25 * MIB
    max_replay_bytes: int = 50 * MIB
    max_audit_bytes: int = 5 * MIB
    # an import's tar (POST .../artifacts/import), spooled to a temporary file as it arrives
    max_import_bytes: int = 2048 * MIB
    body_idle_timeout: float = 30.0
    # request heads and connections, enforced by engines.server's uvicorn protocol
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    max_keyframes: int = 1_000_000
    # one keyframe is parsed whole: this bounds the memory a replay create can take
    max_keyframe_bytes: int = 1 * MIB
    max_json_depth: int = 64
    # how long a process may answer GETs of a record from memory; a delete made by another
    # process is dropped sooner, by the events hub (docs/caches.md): this is the bound when
    # the hub is not running or has lost its database link
    record_cache_ms: int = Field(default=1000, ge=0)

    # signed content URLs and image variants (docs/signed-urls.md)
    url_signing_key: str | None = None
    public_base_url: str | None = None
    # the Host names a signed URL may be issued for: unset on the dev key alone
    # means localhost only, unset otherwise means PUBLIC_BASE_URL's host only
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    image_transforms: bool = True
    # the lean fast path of the hot routes (engines/http/lean.py); false sends every
    # request through FastAPI's full solving (the parity test compares both)
    lean_routes: bool = True
    image_sizes: Annotated[list[int], NoDecode] = [64, 128, 256, 512, 1024, 2048]
    # the `q` values a variant may ask for: with IMAGE_SIZES this bounds the variants one
    # preview can ever have (engines/canvas_artifacts/variants/spec.py, variant_bound)
    image_qualities: Annotated[list[Annotated[int, Field(ge=1, le=100)]], NoDecode,
                               Field(min_length=1)] = [50, 75, 90]
    max_image_pixels: int = 50_000_000

    # browsers on other origins (docs/browser.md): exact origins such as
    # https://app.example.com; empty (the default) sends no CORS headers at all
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        """`postgres://` (what psql, Heroku and most hosted PostgreSQL hand out) means
        PostgreSQL through psycopg, as `postgresql://` does; SQLAlchemy knows only the latter."""
        scheme, sep, rest = value.partition("://")
        return f"postgresql+psycopg://{rest}" if sep and scheme == "postgres" else value

    @field_validator("engines_env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        """ENGINES_ENV as X-Env accepts it (`stage` is `staging`), stored canonical."""
        env = ENVS.get(value.lower())
        if env is None:
            raise ValueError("ENGINES_ENV must be one of dev, staging, prod")
        return env

    @property
    def local_store_forbidden_outside_lab(self) -> bool:
        """ROUTING_MODE=mode without RAW_BUCKET: only `lab` may use the local store."""
        return self.routing_mode == "mode" and not self.raw_bucket

    @field_validator("image_sizes", "image_qualities", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """IMAGE_SIZES=64,128,256 as an operator writes it, not as a JSON list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        """ALLOWED_HOSTS=api.example.com,[::1]: host names, compared without case or port."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [_host_name(str(part)) for part in value if str(part).strip()]
        return value
    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        """Each an origin as a browser sends it (scheme://host[:port]); a wildcard or a
        path is refused at start-up rather than silently matching nothing (or everything)."""
        exact = [origin.rstrip("/") for origin in origins]
        for origin in exact:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"CORS_ORIGINS: {origin!r} is not an exact origin such as "
                                 "https://app.example.com or http://localhost:3000")
        return exact

    retention_preview: Retention = None
    retention_replay: Retention = None
    retention_audit: Retention = None
    # the newest artifact of each kind of a canvas survives retention, however old
    retention_keep_latest: bool = True

    def retention_for(self, kind: str) -> timedelta | None:
        return {"preview": self.retention_preview, "replay": self.retention_replay,
                "audit": self.retention_audit}[kind]

    # observability (engines/observability): see docs/observability.md
    log_format: Literal["json", "text"] = "json"
    metrics_enabled: bool = True
    metrics_tenant_labels: bool = False
    otel_exporter_otlp_endpoint: str | None = None

    # events: SSE feed and webhooks (engines/events)
    events_heartbeat_seconds: float = 15.0
    events_poll_seconds: float = 0.25
    """SQLite only: how often the one poller per process looks for new events."""
    # fair share (docs/fair-share.md): long-lived work has its own limits below MAX_CONNECTIONS
    sse_max_streams_per_tenant: int = Field(default=32, gt=0)
    """Open SSE streams one tenant may hold, counted across the processes sharing the database."""
    sse_max_streams: int = Field(
        default_factory=lambda data: data["max_connections"] // 2, ge=0)
    """Open SSE streams per process; below MAX_CONNECTIONS, so requests always find a slot."""
    export_concurrency: int = Field(default=2, gt=0)
    """Exports one process streams at once."""
    events_stream_max_seconds: float | None = Field(default=None, gt=0)
    """An SSE stream ends after this long (unset: never); clients resume with Last-Event-ID,
    EventSource by itself, so long streams move between replicas as they restart."""
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

    @model_validator(mode="after")
    def _streams_leave_room_for_requests(self) -> Settings:
        if self.sse_max_streams >= self.max_connections:
            raise ValueError(f"SSE_MAX_STREAMS ({self.sse_max_streams}) must be below "
                             f"MAX_CONNECTIONS ({self.max_connections}): request/response "
                             "traffic must always find a connection slot")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """SQLite and a local directory: the one setup where a dev signing key is made."""
        return self.is_sqlite and not self.raw_bucket

    @property
    def should_auto_migrate(self) -> bool:
        """Migrate on start: on by default for SQLite, off for shared databases."""
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    def signing_key(self) -> str:
        """The HS256 key: AUTH_JWT_SIGNING, else (embedded default only) a dev key
        generated once in ENGINES_HOME."""
        if self.auth_jwt_signing:
            return self.auth_jwt_signing
        if not self.is_embedded:
            raise RuntimeError(NO_DEV_KEY_HERE)
        path = self.dev_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def dev_key_in_use(self) -> bool:
        """Only the generated dev key signs tokens and URLs: the embedded default."""
        return not (self.auth_jwt_signing or self.auth_jwks_url or self.url_signing_key)

    def signed_url_hosts(self) -> frozenset[str]:
        """The Host names signed URLs may be issued for: PUBLIC_BASE_URL's, ALLOWED_HOSTS,
        and, with ALLOWED_HOSTS unset on the dev key, localhost (the walkthrough's)."""
        hosts = set(self.allowed_hosts or ())
        if self.allowed_hosts is None and self.dev_key_in_use:
            hosts.update(DEV_HOSTS)
        if self.public_base_url:
            public = urlsplit(self.public_base_url).hostname
            if public:
                hosts.add(public)
        return frozenset(hosts)

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


def _host_name(text: str) -> str:
    """`API.example.com:443` -> `api.example.com`, `[::1]:80` -> `::1`."""
    host = text.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host if host.count(":") > 1 else host.split(":", 1)[0]


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given to help debugging
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
