"""Optional RS256 verification against a JWKS (AUTH_JWKS_URL), served on loopback.

A tiny http.server thread plays the OIDC issuer (Cognito or any other): it
publishes whichever keys the test puts in it and counts how often it is
asked, so caching, refresh on an unknown `kid` and revocation are observable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import SIGNING_KEY, Stack
from engines.auth.tests.claims import claims
from engines.auth.tokens import TokenVerifier

RS = ["RS256"]


@dataclass
class Issuer:
    """The JWKS endpoint's state: the published keys and the number of fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    url: str = ""

    def publish(self, *entries: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = [jwk(kid, key) for kid, key in entries]


def jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for name in ("k1", "k2", "rogue")}


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.fetches += 1
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def rs256(key: rsa.RSAPrivateKey, kid: str | None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)


def call(stack: Stack, token: str, *, write: bool = False):
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main"}
    if write:
        return stack.client.post("/media-v2/assets", headers=headers,
                                 json={"source_uri": "https://cdn.example.com/j.png"})
    return stack.client.get("/media-v2/assets", headers=headers)


def jwks_stack(make_stack, issuer: Issuer, **overrides: Any) -> Stack:
    values: dict[str, Any] = {"auth_jwks_url": issuer.url, "auth_jwt_algorithms": RS}
    values.update(overrides)
    return make_stack("local-sqlite", **values)


def test_token_signed_with_jwks_key_accepted(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)
    token = rs256(rsa_keys["k1"], "k1")
    assert call(stack, token).status_code == 200
    created = call(stack, token, write=True)
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "u_ana"


def test_token_signed_with_another_key_rejected(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)
    forged = call(stack, rs256(rsa_keys["rogue"], "k1"))           # claims the issuer's kid
    assert forged.status_code == 401
    assert "signature" in forged.json()["error"]["message"].lower()
    unknown = call(stack, rs256(rsa_keys["rogue"], "rogue"))       # a kid the issuer lacks
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "auth.unauthorized"
    assert call(stack, rs256(rsa_keys["k1"], None)).status_code == 401  # no kid at all


def test_hs256_rejected_when_only_rs256_configured(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)
    hs = jwt.encode(claims(), SIGNING_KEY, algorithm="HS256")
    assert call(stack, hs).status_code == 401
    # algorithm confusion: HS256 keyed with the issuer's *public* key, which anyone can get
    public_pem = rsa_keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def seg(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    signing_input = f"{seg({'alg': 'HS256', 'typ': 'JWT', 'kid': 'k1'})}.{seg(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    response = call(stack, confused)
    assert response.status_code == 401
    assert "algorithm" in response.json()["error"]["message"]


def test_expired_rs256_token_rejected(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)
    now = int(time.time())
    response = call(stack, rs256(rsa_keys["k1"], "k1", iat=now - 900, exp=now - 60))
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_hs256_and_rs256_side_by_side(make_stack, issuer, rsa_keys) -> None:
    """Both configured: dev tokens keep working while the issuer's tokens are accepted."""
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer, auth_jwt_algorithms=["HS256", "RS256"])
    assert call(stack, stack.token()).status_code == 200
    assert call(stack, rs256(rsa_keys["k1"], "k1")).status_code == 200
    assert call(stack, rs256(rsa_keys["rogue"], "k1")).status_code == 401


def test_keys_are_cached(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)
    token = rs256(rsa_keys["k1"], "k1")
    for _ in range(5):
        assert call(stack, token).status_code == 200
    assert issuer.fetches == 1


def test_rotation_unknown_kid_refreshes_the_keys(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer, auth_jwks_refresh_cooldown_seconds=0)
    assert call(stack, rs256(rsa_keys["k1"], "k1")).status_code == 200
    assert issuer.fetches == 1

    issuer.publish(("k1", rsa_keys["k1"]), ("k2", rsa_keys["k2"]))   # the issuer rotates
    assert call(stack, rs256(rsa_keys["k2"], "k2")).status_code == 200
    assert issuer.fetches == 2                                      # one refetch, for k2
    assert call(stack, rs256(rsa_keys["k1"], "k1")).status_code == 200
    assert call(stack, rs256(rsa_keys["k2"], "k2")).status_code == 200
    assert issuer.fetches == 2                                      # both now from the cache


def test_unknown_kids_cannot_hammer_the_issuer(make_stack, issuer, rsa_keys) -> None:
    """Within the refresh cooldown, forged kids are refused without refetching."""
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer)                          # default cooldown (30 s)
    assert call(stack, rs256(rsa_keys["k1"], "k1")).status_code == 200
    for _ in range(5):
        assert call(stack, rs256(rsa_keys["rogue"], uuid.uuid4().hex)).status_code == 401
    assert issuer.fetches == 1


def test_revoked_key_is_refused_once_the_cache_expires(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer, auth_jwks_cache_seconds=1)
    now = [time.time()]
    stack.client.app.state.verifier = TokenVerifier(stack.settings, clock=lambda: now[0])
    old = rs256(rsa_keys["k1"], "k1")
    assert call(stack, old).status_code == 200
    assert call(stack, old).status_code == 200                      # cached: no refetch
    assert issuer.fetches == 1

    issuer.publish(("k2", rsa_keys["k2"]))                          # k1 withdrawn
    now[0] += 0.9                                                   # within the cache's second
    assert call(stack, old).status_code == 200
    assert issuer.fetches == 1
    now[0] += 0.3                                                   # the clock seam: no waiting
    assert call(stack, old).status_code == 401
    assert issuer.fetches == 2
    assert call(stack, rs256(rsa_keys["k2"], "k2")).status_code == 200


def test_unreachable_issuer_is_503(make_stack, rsa_keys) -> None:
    """An issuer outage is ours to report (503, retry), not a verdict on the token."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stack = make_stack("local-sqlite", auth_jwks_url=f"http://127.0.0.1:{port}/jwks.json",
                       auth_jwt_algorithms=RS)
    response = call(stack, rs256(rsa_keys["k1"], "k1"))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "auth.jwks_unavailable"
    assert error["request_id"] == response.headers["x-request-id"]


def test_issuer_with_no_usable_keys_is_503(make_stack, issuer, rsa_keys) -> None:
    issuer.keys = [{"kty": "RSA", "kid": "broken"}]                 # no modulus, no exponent
    stack = jwks_stack(make_stack, issuer)
    response = call(stack, rs256(rsa_keys["k1"], "k1"))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "auth.jwks_unavailable"


def test_issuer_and_audience_are_enforced_when_configured(make_stack, issuer, rsa_keys) -> None:
    issuer.publish(("k1", rsa_keys["k1"]))
    stack = jwks_stack(make_stack, issuer, auth_jwt_issuer="https://idp.example/pool",
                       auth_jwt_audience="canvas-api")
    good = rs256(rsa_keys["k1"], "k1", iss="https://idp.example/pool", aud="canvas-api")
    assert call(stack, good).status_code == 200
    for bad in (rs256(rsa_keys["k1"], "k1", iss="https://evil.example", aud="canvas-api"),
                rs256(rsa_keys["k1"], "k1", iss="https://idp.example/pool", aud="other-app"),
                rs256(rsa_keys["k1"], "k1", aud="canvas-api"),
                rs256(rsa_keys["k1"], "k1", iss="https://idp.example/pool")):
        assert call(stack, bad).status_code == 401
