"""The client under faults, against a real server on both stacks: a retry never makes
a second artifact, Retry-After is honoured, and the event feed resumes by itself.

Faults come from a small proxy in front of the real `engines serve`
(tests/_faulty_proxy.py): it answers 429/503 itself, or lets the server
create and then closes the connection before the answer's body, or cuts an
SSE stream mid-way. The server itself is also stopped and started again on
its port under a waiting client.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from conftest import PNG, new_canvas
from engines.client import ArtifactError, Event, RetryPolicy
from engines.client.errors import UNREACHABLE
from tests._client_stacks import Served, new_tenant, served_fixture
from tests._faulty_proxy import Fault, faulty_proxy
from tests._server import free_port

served = served_fixture()
FAST = RetryPolicy(attempts=4, backoff=0.05, max_backoff=0.2)


def test_lost_answer_is_retried_with_the_same_key_and_makes_one_artifact(
        served: Served) -> None:
    canvas = new_canvas()
    with faulty_proxy(served.url) as (proxy, url), served.client(url=url, retry=FAST) as client:
        proxy.add(Fault("POST", "/preview", drop=True), Fault("POST", "/replay", drop=True),
                  Fault("POST", "/audit", drop=True), Fault("POST", "/audit", drop=True))
        preview = client.create_preview(canvas, 1, PNG)
        replay = client.create_replay(canvas, {"rev": 2, "keyframes": []})
        audit = client.create_audit(canvas, 3)  # dropped twice, answered the third time
        assert proxy.faults == []
        for suffix, attempts in (("/preview", 2), ("/replay", 2), ("/audit", 3)):
            keys = {s.headers["idempotency-key"] for s in proxy.requests("POST", suffix)}
            assert len(proxy.requests("POST", suffix)) == attempts and len(keys) == 1
        assert sorted(r.id for r in client.list(canvas)) == sorted(
            [preview.id, replay.id, audit.id])
        assert client.get(canvas, preview.id).size_bytes == len(PNG)


def test_429_and_503_are_retried_honouring_retry_after(served: Served) -> None:
    canvas = new_canvas()
    with faulty_proxy(served.url) as (proxy, url), served.client(url=url, retry=FAST) as client:
        proxy.add(Fault("POST", "/audit", status=429, retry_after="1"),
                  Fault("POST", "/audit", status=503))
        started = time.monotonic()
        record = client.create_audit(canvas, 1)
        waited = time.monotonic() - started
        assert waited >= 1.0  # FAST's own pauses are 0.2 s at most
        assert [r.id for r in client.list(canvas)] == [record.id]

        proxy.add(*[Fault("GET", "/latest", status=503)] * FAST.attempts)
        with pytest.raises(ArtifactError) as exhausted:
            client.latest(canvas, "audit")
        assert (exhausted.value.status, exhausted.value.code) == (503, "proxy.injected")
        assert len(proxy.requests("GET", "/latest")) == FAST.attempts

        proxy.add(Fault("GET", "/latest", status=429, retry_after="3600"))
        with pytest.raises(ArtifactError) as too_long:  # not worth waiting an hour
            client.latest(canvas, "audit")
        assert too_long.value.status == 429


def test_a_non_transient_error_is_not_retried(served: Served) -> None:
    with faulty_proxy(served.url) as (proxy, url), served.client(url=url, retry=FAST) as client:
        with pytest.raises(ArtifactError) as missing:
            client.get(new_canvas(), "art_nope")
        assert missing.value.status == 404
        assert len(proxy.requests("GET", "/art_nope")) == 1


def test_lost_delete_answer_counts_as_deleted(served: Served) -> None:
    canvas = new_canvas()
    with faulty_proxy(served.url) as (proxy, url), served.client(url=url, retry=FAST) as client:
        record = client.create_audit(canvas, 1)
        proxy.add(Fault("DELETE", f"/{record.id}", drop=True))
        client.delete(canvas, record.id)  # the retry gets 404: the first attempt did it
        assert list(client.list(canvas)) == []
        with pytest.raises(ArtifactError) as again:  # a plain 404 is still an error
            client.delete(canvas, record.id)
        assert again.value.status == 404


def test_unreachable_server_raises_artifact_error_without_status() -> None:
    from engines.client import ArtifactClient

    with ArtifactClient(f"http://127.0.0.1:{free_port()}", "t", "t_acme", "dev", "p_web",
                        retry=FAST) as client, pytest.raises(ArtifactError) as error:
        client.create_audit("c_1", 1)
    assert (error.value.status, error.value.code, error.value.request_id) == (
        None, UNREACHABLE, None)


def test_create_waits_through_a_server_restart(served: Served) -> None:
    canvas = new_canvas()
    patient = RetryPolicy(attempts=400, backoff=0.2, max_backoff=0.5)  # a loaded CI's restart
    port = served.server.port  # type: ignore[union-attr]
    with served.client(retry=patient) as client:
        first = client.create_audit(canvas, 1, idempotency_key="restart-key")
        served.stop()
        result: dict[str, object] = {}

        def create() -> None:
            result["record"] = client.create_audit(canvas, 2)

        thread = threading.Thread(target=create)
        thread.start()
        time.sleep(0.5)  # the client is retrying a refused connection by now
        served.start(port=port)
        thread.join(timeout=180)
        again = client.create_audit(canvas, 1, idempotency_key="restart-key")
        assert again == first  # the key outlives the process
        made = result["record"]
        assert sorted(r.id for r in client.list(canvas)) == sorted([first.id, made.id])  # type: ignore[attr-defined]


def test_events_resume_after_the_stream_is_cut(served: Served) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    with faulty_proxy(served.url) as (proxy, url), served.client(
            tenant, url=url, retry=FAST) as client:
        made = [client.create_audit(canvas, 1).id]
        proxy.add(Fault("GET", "/events", cut_after=1), Fault("GET", "/events", status=503))
        got: list[Event] = []

        def follow() -> None:
            for event in client.events(canvas, after=0):
                got.append(event)
                if len(got) == 4:
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        made += [client.create_audit(canvas, rev).id for rev in (2, 3, 4)]
        thread.join(timeout=30)
        streams = proxy.requests("GET", "/events")
    assert [e.artifact_id for e in got] == made  # no gap, no repeat
    assert [e.seq for e in got] == [1, 2, 3, 4]
    assert len(streams) >= 3  # cut, refused with 503, then resumed
    assert "last-event-id" in streams[-1].headers


def test_events_resume_from_the_start_when_cut_before_any_event(served: Served) -> None:
    """Subscribed live (no `after`) and cut before any event: the stream's opening id is
    where it resumes from, so what was written while it reconnected is not lost."""
    tenant, canvas = new_tenant(), new_canvas()
    gate = threading.Event()
    with faulty_proxy(served.url) as (proxy, url):
        async def main() -> list[Event]:
            got: list[Event] = []
            async with served.aclient(tenant, url=url, retry=FAST) as client:
                await client.create_audit(canvas, 0)  # before the subscription: not sent
                proxy.add(Fault("GET", "/events", cut_after=0), Fault("GET", "/events",
                                                                      hold=gate))
                async with anyio.create_task_group() as tasks:
                    async def follow() -> None:
                        async for event in client.events(None):
                            got.append(event)
                            if len(got) == 2:
                                tasks.cancel_scope.cancel()

                    tasks.start_soon(follow)
                    with anyio.fail_after(20):
                        while len(proxy.requests("GET", "/events")) < 2:  # cut, reconnecting
                            await anyio.sleep(0.02)
                        await client.create_audit(canvas, 1)
                        await client.create_audit(canvas, 2)
                        gate.set()
                        while len(got) < 2:
                            await anyio.sleep(0.02)
            return got

        got = anyio.run(main)
        resumed = proxy.requests("GET", "/events")[1]
    assert [e.data["rev"] for e in got] == [1, 2]
    assert resumed.headers["last-event-id"] == "1"
