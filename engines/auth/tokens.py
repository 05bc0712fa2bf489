"""Bearer-token verification and the membership/role checks every route makes.

Tokens are HS256 (AUTH_JWT_SIGNING) or, when AUTH_JWKS_URL is set, RS256
against the issuer's JWKS. Only configured algorithms are accepted; `none`
never is; a token must carry `exp` unless AUTH_ALLOW_NO_EXP=true. The order
of checks is fixed: token (401), routing headers (400), tenant membership, env
(the optional `envs` claim) and role (403).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from jwt.jwk_set_cache import JWKSetCache
from starlette.concurrency import run_in_threadpool

from engines.auth.routing import RequestContext, attribute, get_request_context
from engines.common.cache import Cache
from engines.config import Settings
from engines.http.errors import Forbidden, ServiceUnavailable, Unauthorized
from engines.http.params import ENVS, LOCAL_MODES

ROLES = ("viewer", "member", "admin", "owner")
MAX_SUBJECT_LENGTH = 128
"""The narrowest column a subject is stored in (media_v2_assets.user_id)."""
WRITE_ROLES = frozenset({"member", "admin", "owner"})
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
VERIFIED_CACHE_SIZE = 10_000
VERIFIED_TTL = 60.0


@dataclass(frozen=True, slots=True)
class AuthContext:
    actor_id: str
    tenant_ids: frozenset[str]
    role_map: dict[str, str] = field(default_factory=dict)
    default_tenant_id: str | None = None
    envs: frozenset[str] | None = None
    """The envs the token is limited to (its `envs` claim); None means every env."""

    def role_for(self, tenant_id: str) -> str | None:
        """A listed tenant without a role_map entry is a viewer; unlisted has none."""
        if tenant_id not in self.tenant_ids:
            return None
        role = self.role_map.get(tenant_id, "viewer")
        return role if role in ROLES else "viewer"


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified caller and the routing keys of the request."""

    auth: AuthContext
    ctx: RequestContext
    role: str


class _KeySetCache(JWKSetCache):
    """PyJWT's cache of the issuer's key set, aged on the verifier's clock.

    PyJWT times the set with `time.monotonic` of its own; on the verifier's clock
    a test moves time past AUTH_JWKS_CACHE_SECONDS instead of sleeping it out.
    """

    def __init__(self, lifespan: float, clock: Callable[[], float]) -> None:
        super().__init__(lifespan)
        self.clock = clock
        self.fetched_at: float | None = None

    def put(self, jwk_set: jwt.PyJWKSet | dict[str, Any] | None) -> None:
        super().put(jwk_set)
        self.fetched_at = None if jwk_set is None else self.clock()

    def is_expired(self) -> bool:
        return self.fetched_at is not None and self.clock() > self.fetched_at + self.lifespan


class TokenVerifier:
    """Verifies tokens with the configured key material; built once per app."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        """Epoch seconds `exp` is judged against, and the caches of verified tokens and of
        the JWKS age on (a test's seam: expiry without waiting)."""
        self.algorithms = [a for a in settings.auth_jwt_algorithms if a.lower() != "none"]
        self.hmac_key = settings.signing_key() if _HMAC_ALGS & set(self.algorithms) else None
        # Only the whole key set is cached, for AUTH_JWKS_CACHE_SECONDS: PyJWKClient's
        # per-kid cache never expires, so a key the issuer revoked would stay trusted.
        self.jwks = (
            jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=False,
                            lifespan=settings.auth_jwks_cache_seconds, timeout=5,
                            cooldown_duration=settings.auth_jwks_refresh_cooldown_seconds)
            if settings.auth_jwks_url else None
        )
        if self.jwks is not None:
            self.jwks.jwk_set_cache = _KeySetCache(settings.auth_jwks_cache_seconds, clock)
        # an OIDC issuer signs tokens for many clients: pin the issuer and audience
        self.issuer = settings.auth_jwt_issuer
        self.audience = settings.auth_jwt_audience
        # a token without `exp` never stops working, whoever copied it: refused by default
        self.required_claims = ["sub"] if settings.auth_allow_no_exp else ["sub", "exp"]
        if self.issuer:
            self.required_claims.append("iss")
        if self.audience:
            self.required_claims.append("aud")
        # a revoked JWKS key must stop working when the key set is refetched
        self.verified_ttl = min(VERIFIED_TTL, settings.auth_jwks_cache_seconds) \
            if self.jwks else VERIFIED_TTL
        # wall-clock: an entry must not outlive the token's own `exp`, an epoch time
        self._verified: Cache[str, AuthContext] = Cache(VERIFIED_CACHE_SIZE, self.verified_ttl,
                                                        clock=clock)

    def _key_for(self, token: str, alg: str) -> Any:
        if alg in _HMAC_ALGS and self.hmac_key:
            return self.hmac_key
        if self.jwks is not None and not alg.startswith("HS"):
            try:
                return self.jwks.get_signing_key_from_jwt(token).key
            except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as exc:
                # the issuer is unreachable or serves no usable keys: our outage, not a bad
                # token, so clients retry instead of discarding a token that may be valid
                raise ServiceUnavailable("the token issuer's keys are unavailable; retry later",
                                         code="auth.jwks_unavailable") from exc
            except jwt.PyJWKClientError as exc:
                raise Unauthorized(f"no usable signing key: {exc}") from exc
        raise Unauthorized("token algorithm not accepted")

    def verify(self, token: str) -> AuthContext:
        """The token's AuthContext, from the cache of recently verified tokens if there.

        Clients send the same token on every request; verifying it again each
        time (two base64/JSON parses and an HMAC) was a visible share of a
        small request's CPU. A cached entry (engines/common/cache.py) lives at
        most VERIFIED_TTL seconds and never past the token's own `exp`; a token
        holds no tenant data, so no event drops it.
        """
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        started = self._verified.now()
        auth, expires = self._verify(token)
        self._verified.put(token, auth, started, ttl=expires - started)
        return auth

    def _verify(self, token: str) -> tuple[AuthContext, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized("malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized("token algorithm not accepted")
        try:
            claims = jwt.decode(token, self._key_for(token, alg), algorithms=[alg],
                                issuer=self.issuer, audience=self.audience,
                                options={"require": self.required_claims,
                                         "verify_aud": self.audience is not None,
                                         "verify_exp": False})  # judged below, on our clock
        except jwt.ImmatureSignatureError as exc:
            raise Unauthorized("token not yet valid") from exc
        except jwt.MissingRequiredClaimError as exc:
            hint = " (AUTH_ALLOW_NO_EXP is false)" if exc.claim == "exp" else ""
            raise Unauthorized(f"invalid token: {exc}{hint}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        expires = claims.get("exp")
        if expires is None:
            return _auth_from_claims(claims), math.inf
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise Unauthorized("invalid token: Expiration Time claim (exp) must be a number")
        if expires <= self.clock():
            raise Unauthorized("token expired")
        return _auth_from_claims(claims), float(expires)


def _check_subject(sub: Any) -> str:
    """The subject becomes actor and user id columns: a value a column cannot hold
    (too long, or a NUL PostgreSQL refuses) must be the token's fault (401), not an
    outage (503) on one database and a 201 on the other."""
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("token has no subject")
    if len(sub) > MAX_SUBJECT_LENGTH or not sub.isprintable():
        raise Unauthorized(f"token subject must be 1-{MAX_SUBJECT_LENGTH} printable characters")
    return sub


def _envs_claim(value: Any) -> frozenset[str] | None:
    """The optional `envs` claim: a list of env names (`stage` is `staging`)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(env, str) and env.lower() in ENVS for env in value):
        raise Unauthorized("envs claim must be a list of dev, staging, prod")
    return frozenset(ENVS[env.lower()] for env in value)


def _auth_from_claims(claims: dict[str, Any]) -> AuthContext:
    sub = _check_subject(claims.get("sub"))
    tenants = claims.get("tenant_ids") or []
    role_map = claims.get("role_map") or {}
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise Unauthorized("tenant_ids claim must be a list of strings")
    if not isinstance(role_map, dict):
        raise Unauthorized("role_map claim must be an object")
    return AuthContext(actor_id=sub, tenant_ids=frozenset(tenants),
                       role_map={str(k): str(v) for k, v in role_map.items()},
                       default_tenant_id=claims.get("default_tenant_id"),
                       envs=_envs_claim(claims.get("envs")))


def issue_token(settings: Settings, *, sub: str, tenants: list[str], role: str,
                ttl: int = 3600, envs: list[str] | None = None) -> str:
    """Sign a dev token (HS256) as `engines token` and the tests do; `envs` limits it.
    It always expires: a token that never does is not something to hand out."""
    if ttl <= 0:
        raise ValueError(f"a token's ttl must be at least one second, not {ttl}")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub, "tenant_ids": tenants, "default_tenant_id": tenants[0] if tenants else None,
        "role_map": {t: role for t in tenants}, "iat": now, "exp": now + ttl,
    }
    if envs is not None:
        claims["envs"] = envs
    return jwt.encode(claims, settings.signing_key(), algorithm="HS256")


def get_auth_context(request: Request) -> AuthContext:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(token.strip())


def _caller(request: Request, *, write: bool) -> Caller:
    auth = get_auth_context(request)
    ctx = get_request_context(request)
    role = auth.role_for(ctx.tenant_id)
    if role is None:
        raise Forbidden("token is not valid for this tenant", code="auth.tenant_forbidden")
    if auth.envs is not None and ctx.env not in auth.envs:
        raise Forbidden(f"token is not valid for env {ctx.env}", code="auth.env_forbidden")
    attribute(request.scope, ctx.tenant_id, ctx.env)  # proven: the token lists the tenant
    if write and role not in WRITE_ROLES:
        raise Forbidden(f"role {role} cannot write", code="auth.role_forbidden")
    _check_store_allowed(request, ctx)
    return Caller(auth=auth, ctx=ctx, role=role)


def _check_store_allowed(request: Request, ctx: RequestContext) -> None:
    """The engines codebase allows the local fallback store to `lab` only: under
    ROUTING_MODE=mode without RAW_BUCKET, a saas or enterprise request is refused
    before it can read or store anything."""
    if ctx.mode in LOCAL_MODES or ctx.mode is None:
        return
    if request.app.state.runtime.settings.local_store_forbidden_outside_lab:
        raise ServiceUnavailable(
            f"X-Mode {ctx.mode} may not use the local store: set RAW_BUCKET (only lab runs "
            "on local storage under ROUTING_MODE=mode)", code="storage.local_forbidden")


async def _checked_caller(request: Request, *, write: bool) -> Caller:
    """HS256 checks are microseconds: run them on the loop, saving a thread hop per
    request. A JWKS verifier may fetch keys over the network, so it gets a thread."""
    if request.app.state.verifier.jwks is None:
        return _caller(request, write=write)
    return await run_in_threadpool(_caller, request, write=write)


async def reader(request: Request) -> Caller:
    """Dependency: any member of the tenant, viewers included."""
    return await _checked_caller(request, write=False)


async def writer(request: Request) -> Caller:
    """Dependency: members, admins and owners."""
    return await _checked_caller(request, write=True)


ADMIN_ROLES = frozenset({"admin", "owner"})


async def admin(request: Request) -> Caller:
    """Dependency: admins and owners, for tenant-wide operations (bulk delete, webhooks)."""
    caller = await _checked_caller(request, write=True)
    if caller.role not in ADMIN_ROLES:
        raise Forbidden(f"role {caller.role} cannot do this; admin or owner needed",
                        code="auth.role_forbidden")
    return caller


Reader = Annotated[Caller, Depends(reader)]
"""A route parameter: any member of the tenant (viewer and up)."""
Writer = Annotated[Caller, Depends(writer)]
"""A route parameter: member, admin or owner."""
Admin = Annotated[Caller, Depends(admin)]
"""A route parameter: admin or owner."""
