"""The settings in effect as a user would write them: `RAW_BUCKET=...`, not field dumps.

`engines doctor` prints this, so what it shows can be pasted back into an
environment, secrets masked, with what each default amounts to here.
"""

from __future__ import annotations

import json

from engines.config import Settings


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return str(alias) if isinstance(alias, str) else field.upper()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict | bool):
        return json.dumps(value)
    return str(value)


def assignments(settings: Settings) -> list[str]:
    """`NAME=value`, one per setting, sorted; `# default`/`# unset`: not in the environment."""
    shown = settings.masked()
    lines = []
    for field in sorted(Settings.model_fields, key=env_name):
        line = f"{env_name(field)}={_text(shown[field])}"
        if field not in settings.model_fields_set:
            line += "  # unset" if shown[field] is None else "  # default"
        lines.append(line)
    return lines


def consequences(settings: Settings) -> list[str]:
    """What the settings amount to: which signing key, whether serve migrates, where blobs go."""
    if settings.auth_jwt_signing:
        signing = "AUTH_JWT_SIGNING (dev key not used)"
    elif settings.auth_jwks_url:
        signing = f"tokens verified against AUTH_JWKS_URL={settings.auth_jwks_url}"
    elif settings.is_embedded:
        signing = (f"dev key in use: {settings.dev_key_file} (AUTH_JWT_SIGNING unset; "
                   "set it in production)")
    else:
        signing = ("none: AUTH_JWT_SIGNING unset, and a dev key is for the embedded default "
                   "only (`engines serve` refuses to start)")
    if settings.auto_migrate is None:
        migrate = (f"auto-migrate {'on' if settings.should_auto_migrate else 'off'} "
                   "(AUTO_MIGRATE unset: on for SQLite, off otherwise)")
    else:
        migrate = f"auto-migrate {'on' if settings.auto_migrate else 'off'} (AUTO_MIGRATE)"
    blobs = (f"blobs in S3 bucket RAW_BUCKET={settings.raw_bucket}" if settings.raw_bucket
             else f"blobs in local directory MEDIA_LOCAL_ROOT={settings.media_local_root} "
                  "(RAW_BUCKET unset)")
    no_exp = ("tokens without exp: accepted, valid forever (AUTH_ALLOW_NO_EXP=true)"
              if settings.auth_allow_no_exp
              else "tokens without exp: refused with 401 (AUTH_ALLOW_NO_EXP=false)")
    hosts = ", ".join(sorted(settings.signed_url_hosts())) or "none"
    why = ("PUBLIC_BASE_URL and ALLOWED_HOSTS" if settings.allowed_hosts is not None
           else "ALLOWED_HOSTS unset: localhost on the dev key alone, else PUBLIC_BASE_URL's")
    signed = f"signed URLs issued for Host: {hosts} ({why})"
    return [f"signing key: {signing}", migrate, blobs, no_exp, signed, routing(settings)]


def routing(settings: Settings) -> str:
    """Which routing headers requests must carry, and (ROUTING_MODE=mode) which modes
    the blob store serves."""
    if settings.routing_mode == "env":
        return ("routing: X-Env required (ROUTING_MODE=env); X-Mode optional "
                "(saas|enterprise|lab), recorded in lineage")
    line = (f"routing: X-Mode required, X-Env refused (ROUTING_MODE=mode); env is "
            f"ENGINES_ENV={settings.engines_env}")
    if settings.local_store_forbidden_outside_lab:
        line += ("; RAW_BUCKET unset: local storage is for X-Mode lab only, saas and "
                 "enterprise requests are refused (503 storage.local_forbidden)")
    return line


def warnings(settings: Settings) -> list[str]:
    """What is legal but almost surely not meant: `engines doctor` prints these as WARN."""
    found = []
    if not (settings.public_base_url or settings.allowed_hosts or settings.dev_key_in_use):
        found.append("signed URLs: neither PUBLIC_BASE_URL nor ALLOWED_HOSTS is set, so "
                     "every POST .../signed-url answers 400 signed_url.host_not_allowed; set "
                     "PUBLIC_BASE_URL (e.g. https://api.example.com) or ALLOWED_HOSTS")
    return found
