"""Log output: one JSON object per line (LOG_FORMAT=json, the default) or readable text.

`engines serve` hands `log_config` to uvicorn, so uvicorn's own messages and
ours share one format, and uvicorn's access log is off: the request line
written by `requests.RequestObserver` says it once, with more in it.
Every line passes through `redact`: bearer tokens, anything shaped like a
JWT and the configured secrets never reach the output.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from engines.config import Settings

REQUEST_LOGGER = "engines.request"
REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_secrets: list[str] = []


def register_secrets(*values: str | None) -> None:
    """Values that must never be printed (signing key, database password, ...)."""
    for value in values:
        if value and len(value) >= 6 and value not in _secrets:
            _secrets.append(value)


def redact(text: str) -> str:
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


def settings_secrets(settings: Settings) -> list[str | None]:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(settings.database_url).password
    except Exception:  # noqa: BLE001 - a malformed URL has no password to hide
        password = None
    return [settings.auth_jwt_signing, str(password) if password else None]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "pid", "message", ...request fields, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
            "message": record.getMessage(), **_fields(record)}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        said = getattr(record, "in_message", ())
        extra = " ".join(f"{key}={value}" for key, value in _fields(record).items()
                         if value is not None and key not in said)
        return redact(f"{line} {extra}" if extra else line)


def log_config(settings: Settings, *, level: str = "info",
               request_log: bool = True) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn.run(log_config=...), applied in every worker."""
    register_secrets(*settings_secrets(settings))
    formatter = "json" if settings.log_format == "json" else "text"
    level = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"},
                       "text": {"()": f"{__name__}.TextFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": formatter,
                                 "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "engines": {"handlers": ["default"], "level": level, "propagate": False},
            REQUEST_LOGGER: {"level": level if request_log else "WARNING"},
        },
    }
