"""Replays cost memory near their size, whatever their shape, on the real server.

A 50 MiB replay whose envelope held `"x": [{}, {}, ...]` took 2.6 GB of RSS
to create, and a one-millisecond window of a replay parsed (and returned)
its whole envelope. Here one `engines serve` process takes a replay of
MAX_REPLAY_BYTES and the hostile shapes of the same size, and its peak RSS
(VmHWM, the whole process, idle footprint included) stays under 8x that size.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from conftest import SIGNING_KEY
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import Server, running_server

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
LIMIT = 50 * MIB  # the default MAX_REPLAY_BYTES
MAX_KEYFRAMES = 300_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    workdir = tmp_path_factory.mktemp("replay-memory")
    env = {"DATABASE_URL": f"sqlite:///{workdir}/engines.db",
           "MEDIA_LOCAL_ROOT": str(workdir / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "MAX_REPLAY_BYTES": str(LIMIT), "MAX_KEYFRAMES": str(MAX_KEYFRAMES)}
    with running_server(env, workdir) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana",
                        tenants=["t_acme"], role="member")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        yield http


def _full_size_replay() -> bytes:
    """A valid replay just under LIMIT: ~190k keyframes of ~270 bytes, a snapshot every 100."""
    frame_bytes = len(orjson.dumps({"t_ms": 10**6, "rev": 1, "type": "snapshot",
                                    "data": {"pad": "x" * 200, "i": 10**6}})) + 1
    count = (LIMIT - 1024) // frame_bytes
    frames = [{"t_ms": t, "rev": 1, "type": "snapshot" if t % 100 == 0 else "commit",
               "data": {"pad": "x" * 200, "i": t}} for t in range(count)]
    return orjson.dumps({"rev": 5, "rev_from": 0, "keyframes": frames, "summary": {}})


def _filler(prefix: bytes, suffix: bytes) -> bytes:
    """prefix + `{},{},...,{}` + suffix, LIMIT bytes in all: ~17M empty objects."""
    count = (LIMIT - len(prefix) - len(suffix)) // 3
    return prefix + b"{}," * count + b"{}" + suffix


def _tiny_keyframes() -> bytes:
    one = b'{"t_ms":0,"type":"commit"},'
    return b'{"rev": 1, "keyframes": [' + one * (LIMIT // len(one) - 1) + b'{"t_ms":0}]}'


# built when the test runs (50 MiB each), not when the module is collected
HOSTILE: list[tuple[str, str, Callable[[], bytes]]] = [
    ("envelope of empty objects after the keyframes", "replay.envelope_too_large",
     lambda: _filler(b'{"rev": 1, "keyframes": [], "x": [', b"]}")),
    ("envelope of empty objects before the keyframes", "replay.envelope_too_large",
     lambda: _filler(b'{"x": [', b'], "rev": 1, "keyframes": []}')),
    ("one keyframe of empty objects", "replay.keyframe_too_large",
     lambda: _filler(b'{"rev": 1, "keyframes": [{"t_ms": 0, "type": "commit", "data": {"x": [',
                     b"]}}]}")),
    ("the smallest valid keyframes, past MAX_KEYFRAMES", "replay.too_many_keyframes",
     _tiny_keyframes),
]


def test_full_size_replay_and_hostile_shapes_peak_under_8x_their_size(
        server: Server, client: httpx.Client) -> None:
    body = _full_size_replay()
    assert LIMIT - MIB < len(body) <= LIMIT
    created = client.post("/canvas/c_mem/artifacts/replay", content=body)
    assert created.status_code == 201, created.text
    del body
    record = created.json()
    assert record["meta"]["keyframe_count"] > 150_000

    window = client.get(f"/canvas/c_mem/artifacts/{record['id']}/content",
                        params={"from_ms": 150_000, "to_ms": 150_001})
    assert window.status_code == 200, window.text
    frames = window.json()["keyframes"]
    assert [f["t_ms"] for f in frames] == [150_000, 150_001]
    assert len(window.content) < 4096

    for name, code, build in HOSTILE:
        hostile = build()
        assert len(hostile) <= LIMIT, name
        refused = client.post("/canvas/c_mem/artifacts/replay", content=hostile)
        assert refused.status_code == 422, (name, refused.text)
        assert refused.json()["error"]["code"] == code, name

    peak = server.peak_rss_kib() * 1024
    assert peak < 8 * LIMIT, f"peak RSS {peak / MIB:.0f} MiB for {LIMIT / MIB:.0f} MiB bodies"
    listed = client.get("/canvas/c_mem/artifacts").json()["items"]
    assert [r["id"] for r in listed] == [record["id"]]


def test_stored_replay_is_the_submitted_value(client: httpx.Client) -> None:
    document = {"summary": {"note": "ünïcode 😀", "nested": [{"a": "},{"}]}, "rev": 2,
                "keyframes": [{"t_ms": 0, "type": "snapshot", "data": {"s": "]},{\"t_ms\":9}"}},
                              {"t_ms": 5, "type": "commit", "data": {}}]}
    created = client.post("/canvas/c_mem/artifacts/replay",
                          content=orjson.dumps(document, option=orjson.OPT_INDENT_2))
    assert created.status_code == 201, created.text
    content = client.get(f"/canvas/c_mem/artifacts/{created.json()['id']}/content")
    assert content.json() == document
