"""Odd webhook destinations: malformed host names and IPv6 addresses that carry IPv4 ones.

Whatever the URL, subscribing answers 201 or 422 `webhook.destination_refused`,
never a 500; a stored URL that no longer passes is a failed attempt, never a
crashed delivery round.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from sqlalchemy import update

from conftest import Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    created,
    new_tenant,
)
from engines.events.tests.receiver import receiver
from engines.events.tests.test_webhooks import attempts, deliver, lab, subscribe  # noqa: F401
from engines.events.webhooks.destinations import _refused_reason, embedded_ipv4
from engines.events.webhooks.tables import subscriptions

MALFORMED = ["https://xn--/x", "https://a..b/", f"https://{'a' * 300}/",
             f"https://{'a' * 300}.example.com/", f"https://{'abc.' * 70}example/",
             "https://.example.com/", "https://xn--zz/", "https://exa mple.com/"]


def _subscribe(stack: Stack, url: str):
    return stack.client.post("/webhooks", headers=stack.headers(role="admin"),
                             json={"url": url, "events": ["artifact_written"]})


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_host_names_are_refused_not_a_500(make_stack: Callable[..., Stack],
                                                    url: str) -> None:
    stack = make_stack("local-sqlite")
    assert_error(_subscribe(stack, url), 422, "webhook.destination_refused")
    with stack.runtime.engine.connect() as conn:
        assert conn.execute(subscriptions.select()).first() is None


def test_a_stored_destination_that_no_longer_parses_is_a_failed_attempt(lab: Stack) -> None:  # noqa: F811
    """Rows written before the check existed (or by hand): the deliverer records a failed
    attempt for each and keeps delivering to the others."""
    tenant = new_tenant()
    with receiver() as hook:
        good = subscribe(lab, hook.url, tenant)
        bad = {url: subscribe(lab, hook.url, tenant)["id"] for url in MALFORMED[:3]}
        with lab.runtime.engine.begin() as conn:
            for url, sub_id in bad.items():
                conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id)
                             .values(url=url))
        created(create_audit(lab, new_canvas(), tenant=tenant))
        # LAB's 0.5 s timeout is for the timeout tests: on a busy machine the receiver
        # thread can miss it, and this test is about the bad rows, not the clock
        deliver(lab, lambda: all(attempts(lab, tenant, s) for s in [good["id"], *bad.values()]),
                webhook_timeout_seconds=10.0)
    assert len(hook.requests) == 1, attempts(lab, tenant, good["id"])
    [delivered] = attempts(lab, tenant, good["id"])
    assert delivered["outcome"] == "succeeded"
    for sub_id in bad.values():
        [attempt] = attempts(lab, tenant, sub_id)
        assert attempt["outcome"] == "retrying"
        assert attempt["status_code"] is None
        assert attempt["error"].startswith("destination refused:"), attempt["error"]


CARRIED = [
    ("64:ff9b::7f00:1", "127.0.0.1", "NAT64"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "NAT64"),
    ("64:ff9b::a00:1", "10.0.0.1", "NAT64"),
    ("64:ff9b:1::7f00:1", "127.0.0.1", "NAT64"),
    ("64:ff9b:1::c0a8:1", "192.168.0.1", "NAT64"),
    ("2002:7f00:1::", "127.0.0.1", "6to4"),
    ("2002:a9fe:a9fe::1", "169.254.169.254", "6to4"),
    ("2002:ac10:1::", "172.16.0.1", "6to4"),
    ("::127.0.0.1", "127.0.0.1", "IPv4-compatible"),
    ("::169.254.169.254", "169.254.169.254", "IPv4-compatible"),
    ("::10.1.2.3", "10.1.2.3", "IPv4-compatible"),
    # Teredo: server 65.54.227.120, client 127.0.0.1 stored as its complement 80ff:fffe
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "Teredo client"),
    ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254", "Teredo client"),
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "10.0.0.1", "Teredo server"),
    ("::ffff:127.0.0.1", "127.0.0.1", "IPv4-mapped"),
    ("::ffff:169.254.169.254", "169.254.169.254", "IPv4-mapped"),
    ("::ffff:0:a9fe:a9fe", "169.254.169.254", "IPv4-translated"),
]


@pytest.mark.parametrize(("address", "inner", "mechanism"), CARRIED)
def test_ipv6_carrying_a_refused_ipv4_is_refused(make_stack: Callable[..., Stack], address: str,
                                                 inner: str, mechanism: str) -> None:
    assert (mechanism, ipaddress.IPv4Address(inner)) in embedded_ipv4(
        ipaddress.IPv6Address(address))
    stack = make_stack("local-sqlite")
    message = assert_error(_subscribe(stack, f"https://[{address}]/hook"), 422,
                           "webhook.destination_refused")["message"]
    assert f"{inner}, carried by {mechanism}" in message, message


def test_ipv6_carrying_a_public_ipv4_is_judged_by_it() -> None:
    """NAT64, 6to4 and IPv4-compatible forms of 8.8.8.8 reach 8.8.8.8: allowed like it;
    the local-use NAT64 prefix and Teredo are not globally routable in any case."""
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8", "::ffff:8.8.8.8",
                    "2606:4700:4700::1111"):
        assert _refused_reason(address) is None, address
    for address in ("64:ff9b:1::808:808", "2001:0:808:808:8000:63bf:f7f7:f7f7"):
        assert _refused_reason(address) is not None, address
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) == []
