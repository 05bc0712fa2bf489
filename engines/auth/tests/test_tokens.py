"""The token rules of docs/http.md, one test per rule, plus the TokenVerifier directly.

Tokens are crafted both with PyJWT and by hand (base64url segments and an
HMAC computed here), so that a malformed token is rejected for the reason
the row names and not merely because its signature is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from conftest import SIGNING_KEY, Stack
from engines.auth.tests.claims import claims
from engines.auth.tokens import TokenVerifier, issue_token
from engines.config import Settings
from engines.http.errors import Unauthorized

READ = "/media-v2/assets"
WRITE = "/media-v2/assets"
WRITE_BODY = {"source_uri": "https://cdn.example.com/x.png"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def hs256(signing_input: str, key: str = SIGNING_KEY) -> str:
    return b64(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())


def hand_token(header: str, payload: str, key: str = SIGNING_KEY) -> str:
    """A token from raw segments, correctly HS256-signed with the test key."""
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{hs256(signing_input, key)}"


def headers(token: str, tenant: str = "t_acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant, "X-Env": "dev",
            "X-Project-Id": "p_main", "X-Request-Id": "req-token-test"}


def assert_rejected(stack: Stack, token: str, status: int = 401,
                    reason: str | None = None) -> None:
    """Both a read and a write answer `status` in the envelope; `reason` in the message."""
    for response in (stack.client.get(READ, headers=headers(token)),
                     stack.client.post(WRITE, headers=headers(token), json=WRITE_BODY)):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["request_id"] == "req-token-test"
        assert error["code"].startswith("auth.")
        if reason:
            assert reason in error["message"].lower(), error


def test_control_valid_token_is_accepted(local: Stack) -> None:
    """The control row: the hand-made HS256 signature is the one PyJWT makes."""
    payload = claims()
    token = hand_token(segment({"alg": "HS256", "typ": "JWT"}), segment(payload))
    assert jwt.decode(token, SIGNING_KEY, algorithms=["HS256"]) == payload
    assert local.client.get(READ, headers=headers(token)).status_code == 200
    assert local.client.post(WRITE, headers=headers(token), json=WRITE_BODY).status_code == 201


def test_alg_none_rejected(make_stack) -> None:
    """Unsigned tokens, in any spelling, even when `none` is (wrongly) configured."""
    stack = make_stack("local-sqlite", auth_jwt_algorithms=["HS256", "none"])
    payload = segment(claims())
    for alg in ("none", "None", "NONE", "nOnE"):
        header = segment({"alg": alg, "typ": "JWT"})
        for signature in ("", hs256(f"{header}.{payload}")):
            assert_rejected(stack, f"{header}.{payload}.{signature}", reason="algorithm")


# the test key is sized for HS256; HS384/HS512 warn that it is short, which is beside the point
short_key_ok = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@short_key_ok
def test_algorithm_not_configured_rejected(local: Stack) -> None:
    """HS512 signed with the right key is refused while only HS256 is configured."""
    for alg in ("HS512", "HS384"):
        token = jwt.encode(claims(), SIGNING_KEY, algorithm=alg)
        assert_rejected(local, token, reason="algorithm")


@short_key_ok
def test_algorithm_accepted_once_configured(make_stack) -> None:
    """The other side of the previous row: the list of algorithms is the setting."""
    stack = make_stack("local-sqlite", auth_jwt_algorithms=["HS256", "HS512"])
    token = jwt.encode(claims(), SIGNING_KEY, algorithm="HS512")
    assert stack.client.get(READ, headers=headers(token)).status_code == 200


def test_wrong_signature_rejected(local: Stack) -> None:
    header, payload = segment({"alg": "HS256", "typ": "JWT"}), segment(claims())
    other_key = hand_token(header, payload, key="not-the-signing-key-" + "q" * 32)
    assert_rejected(local, other_key, reason="signature")
    # a valid token whose payload was swapped for one granting more: same signature, new body
    valid = hand_token(header, payload)
    elevated = segment(claims(tenant_ids=["t_acme", "t_beta"], role_map={"t_beta": "owner"}))
    assert_rejected(local, f"{header}.{elevated}.{valid.rsplit('.', 1)[1]}", reason="signature")
    # a signature truncated or stripped
    assert_rejected(local, valid[:-4])
    assert_rejected(local, f"{header}.{payload}.")


def test_expired_token_rejected(local: Stack) -> None:
    now = int(time.time())
    token = jwt.encode(claims(iat=now - 7200, exp=now - 60), SIGNING_KEY, algorithm="HS256")
    assert_rejected(local, token, reason="expired")


def test_token_without_exp_rejected_unless_allowed(make_stack) -> None:
    """A token that never expires stays valid wherever it leaks: 401 by default."""
    forever = jwt.encode(claims(exp=None), SIGNING_KEY, algorithm="HS256")
    assert "exp" not in jwt.decode(forever, SIGNING_KEY, algorithms=["HS256"])
    strict = make_stack("local-sqlite")
    assert_rejected(strict, forever, reason="exp")
    assert_rejected(strict, forever, reason="auth_allow_no_exp")
    assert strict.client.get(READ, headers=headers(jwt.encode(
        claims(), SIGNING_KEY, algorithm="HS256"))).status_code == 200

    lenient = make_stack("local-sqlite", auth_allow_no_exp=True)
    assert lenient.client.get(READ, headers=headers(forever)).status_code == 200
    now = int(time.time())
    expired = jwt.encode(claims(iat=now - 7200, exp=now - 60), SIGNING_KEY, algorithm="HS256")
    assert_rejected(lenient, expired, reason="expired")  # an exp that is there still counts


def test_issue_token_always_sets_exp() -> None:
    settings = Settings(auth_jwt_signing=SIGNING_KEY)
    token = issue_token(settings, sub="u_ana", tenants=["t_acme"], role="member", ttl=5)
    assert jwt.decode(token, SIGNING_KEY, algorithms=["HS256"])["exp"] <= time.time() + 5
    for ttl in (0, -1):
        with pytest.raises(ValueError, match="ttl"):
            issue_token(settings, sub="u_ana", tenants=["t_acme"], role="member", ttl=ttl)


def test_not_yet_valid_token_rejected(local: Stack) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 3600), SIGNING_KEY, algorithm="HS256")
    assert_rejected(local, token, reason="not yet valid")


def test_missing_sub_rejected(local: Stack) -> None:
    for bad in (claims(sub=None), claims(sub=""), claims(sub=42)):
        token = hand_token(segment({"alg": "HS256", "typ": "JWT"}), segment(bad))
        assert_rejected(local, token)


def test_malformed_base64_rejected(local: Stack) -> None:
    header, payload = segment({"alg": "HS256", "typ": "JWT"}), segment(claims())
    for token in (
        hand_token("!!not-base64!!", payload),
        hand_token(header, "%%%" + payload),
        hand_token(header, payload[:-1] if len(payload) % 4 != 1 else payload[:-2]),
        f"{header}.{payload}.@@@@",
        f"{header}.{payload}",                       # two segments
        f"{header}.{payload}.{hs256(header)}.extra",  # four segments
    ):
        assert_rejected(local, token)


def test_malformed_json_rejected(local: Stack) -> None:
    """Correctly signed, correctly encoded, but the JSON inside is not a claims object."""
    header = segment({"alg": "HS256", "typ": "JWT"})
    for payload in (b"{not json", b'{"sub": "u_ana",', b'["sub", "u_ana"]', b'"u_ana"', b""):
        assert_rejected(local, hand_token(header, b64(payload)))
    assert_rejected(local, hand_token(b64(b'{"alg": "HS256",'), segment(claims())))
    # valid JSON whose claims have the wrong types
    for bad in (claims(tenant_ids="t_acme"), claims(role_map=["t_acme", "member"])):
        assert_rejected(local, hand_token(header, segment(bad)))


def test_token_for_another_tenant_is_403(local: Stack) -> None:
    token = jwt.encode(claims(tenant_ids=["t_beta"], role_map={"t_beta": "owner"},
                              default_tenant_id="t_beta"), SIGNING_KEY, algorithm="HS256")
    assert_rejected(local, token, status=403)


# ---- the verifier on its own, for the messages callers see ----------------------


@pytest.fixture
def verifier(tmp_path) -> TokenVerifier:
    return TokenVerifier(Settings(auth_jwt_signing=SIGNING_KEY,
                                  dev_key_file=tmp_path / "unused-dev-key"))


def test_verifier_returns_the_claims(verifier: TokenVerifier) -> None:
    auth = verifier.verify(jwt.encode(claims(tenant_ids=["t_acme", "t_beta"]), SIGNING_KEY,
                                      algorithm="HS256"))
    assert auth.actor_id == "u_ana"
    assert auth.tenant_ids == {"t_acme", "t_beta"}
    assert auth.role_for("t_acme") == "member"
    assert auth.role_for("t_beta") == "viewer"
    assert auth.role_for("t_gamma") is None


def test_verifier_never_configures_none(tmp_path) -> None:
    settings = Settings(auth_jwt_signing=SIGNING_KEY, auth_jwt_algorithms=["none", "HS256"],
                        dev_key_file=tmp_path / "k")
    assert TokenVerifier(settings).algorithms == ["HS256"]


def test_verifier_errors_are_unauthorized(verifier: TokenVerifier) -> None:
    for token in ("", "a", "a.b.c", jwt.encode(claims(exp=1), SIGNING_KEY, algorithm="HS256")):
        with pytest.raises(Unauthorized):
            verifier.verify(token)


def test_cached_verification_never_outlives_the_token() -> None:
    """Verified tokens are cached; an expired one is refused all the same."""
    settings = Settings(auth_jwt_signing=SIGNING_KEY)
    now = [time.time()]
    verifier = TokenVerifier(settings, clock=lambda: now[0])  # the clock seam: no waiting
    token = jwt.encode({"sub": "u_ana", "tenant_ids": ["t_acme"], "exp": int(now[0]) + 60},
                       SIGNING_KEY, algorithm="HS256")
    assert verifier.verify(token).actor_id == "u_ana"
    assert verifier.verify(token).actor_id == "u_ana"
    now[0] += 59
    assert verifier.verify(token).actor_id == "u_ana", "still valid, cached or not"
    now[0] += 2  # past exp
    with pytest.raises(Unauthorized):
        verifier.verify(token)
