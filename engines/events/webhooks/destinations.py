"""Where webhooks may go: https only, and only to globally routable addresses.

A subscriber could otherwise point us at loopback, the private network or
a cloud metadata endpoint. The address is checked when the subscription is
made and again at every delivery, and the delivery connects to the very
address that was checked (the Host header and TLS name stay the URL's), so
a DNS answer that changes between check and connect cannot slip through.
WEBHOOK_ALLOW_HTTP / WEBHOOK_ALLOW_PRIVATE relax this for tests and labs.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.config import Settings

if TYPE_CHECKING:
    import httpx


class DestinationRefused(Exception):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True, slots=True)
class Destination:
    url: httpx.URL
    """The URL with its host replaced by the checked address."""
    host: str
    """The original host: the TLS server name."""
    netloc: str
    """The original host[:port]: the Host header."""


def check_url(raw: str, settings: Settings) -> httpx.URL:
    """Shape checks that need no DNS: scheme, host, no credentials."""
    import httpx  # here, not with the module: a worker that never sees a webhook skips 6 MiB

    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise DestinationRefused(f"not a valid URL: {exc}") from exc
    allowed = ("https", "http") if settings.webhook_allow_http else ("https",)
    if url.scheme not in allowed:
        raise DestinationRefused("the URL must be https://" if not settings.webhook_allow_http
                                 else "the URL must be http:// or https://")
    if not url.host:
        raise DestinationRefused("the URL has no host")
    if url.userinfo:
        raise DestinationRefused("credentials in the URL are not allowed")
    return url


def _refused_reason(address: str) -> str | None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_private:
        return "private"
    if not ip.is_global or ip.is_multicast:
        return "not globally routable"
    return None


def resolve(raw: str, settings: Settings) -> Destination:
    """Check the URL and its address now; blocking (DNS), so call it off the event loop."""
    url = check_url(raw, settings)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DestinationRefused(f"cannot resolve {url.host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.webhook_allow_private:
        for address in addresses:
            reason = _refused_reason(address)
            if reason:
                raise DestinationRefused(f"{url.host} resolves to a {reason} address "
                                         f"({address})")
    return Destination(url=url.copy_with(host=addresses[0]), host=url.host,
                       netloc=url.netloc.decode())
