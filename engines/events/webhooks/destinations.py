"""Where webhooks may go: https only, and only to globally routable addresses.

A subscriber could otherwise point us at loopback, the private network or
a cloud metadata endpoint. The address is checked when the subscription is
made and again at every delivery, and the delivery connects to the very
address that was checked (the Host header and TLS name stay the URL's), so
a DNS answer that changes between check and connect cannot slip through.
An IPv6 address that carries an IPv4 one (IPv4-mapped and -translated,
IPv4-compatible, NAT64, 6to4, Teredo) reaches that IPv4 host through a
translator or tunnel, so the embedded address must pass the IPv4 rules too.
WEBHOOK_ALLOW_HTTP / WEBHOOK_ALLOW_PRIVATE relax this for tests and labs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.config import Settings

if TYPE_CHECKING:
    import httpx


MAX_NAME = 253
MAX_LABEL = 63


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
        url.host  # noqa: B018 - decodes the IDNA labels: `xn--` raises here, not later
    except (httpx.InvalidURL, ValueError) as exc:  # idna errors are UnicodeErrors
        raise DestinationRefused(f"not a valid URL: {exc}") from exc
    allowed = ("https", "http") if settings.webhook_allow_http else ("https",)
    if url.scheme not in allowed:
        raise DestinationRefused("the URL must be https://" if not settings.webhook_allow_http
                                 else "the URL must be http:// or https://")
    if not url.host:
        raise DestinationRefused("the URL has no host")
    if url.userinfo:
        raise DestinationRefused("credentials in the URL are not allowed")
    _check_host_name(url.raw_host.decode("ascii", "replace"))
    return url


def _check_host_name(host: str) -> None:
    """A DNS name the resolver can take (RFC 1035 lengths): `a..b`, a 300-character label
    or a 300-character name is refused here, not as an encoding error from getaddrinfo."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.strip("[]"))
        return
    name = host[:-1] if host.endswith(".") else host
    if len(name) > MAX_NAME:
        raise DestinationRefused(f"the host name is longer than {MAX_NAME} characters")
    for label in name.split("."):
        if not 1 <= len(label) <= MAX_LABEL:
            raise DestinationRefused(f"the host name has an empty label or one longer than "
                                     f"{MAX_LABEL} characters")


NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
"""RFC 6052's well-known prefix and RFC 8215's local-use one: the IPv4 address is the
last 32 bits (the /96 layout, the one NAT64 gateways use)."""
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""SIIT's IPv4-translated ::ffff:0:a.b.c.d (RFC 2765), beside the IPv4-mapped ::ffff:a.b.c.d."""
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""Deprecated IPv4-compatible ::a.b.c.d (but :: and ::1, which are IPv6's own)."""
NOT_GLOBAL_V6 = (NAT64[1],)
"""Not globally reachable (RFC 8215), though Pythons before 3.12.4 call it global."""


def _last_32_bits(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the mechanism's name."""
    if ip.ipv4_mapped is not None:
        return [("IPv4-mapped", ip.ipv4_mapped)]
    if ip in IPV4_TRANSLATED:
        return [("IPv4-translated", _last_32_bits(ip))]
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return [("IPv4-compatible", _last_32_bits(ip))]
    if any(ip in prefix for prefix in NAT64):
        return [("NAT64", _last_32_bits(ip))]
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip.teredo is not None:  # (server, client): the client's is stored XOR 0xffffffff
        server, client = ip.teredo
        return [("Teredo client", client), ("Teredo server", server)]
    return []


def _ip_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_private:
        return "private"
    if not ip.is_global or ip.is_multicast:
        return "not globally routable"
    return None


def _refused_reason(address: str) -> str | None:
    """Why an address may not receive webhooks, or None. An IPv6 address carrying an IPv4
    one is refused when the IPv4 address is, whatever the IPv6 rules say of the prefix."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return _ip_reason(ip)
    for mechanism, inner in embedded_ipv4(ip):
        reason = _ip_reason(inner)
        if reason:
            return f"{reason} ({inner}, carried by {mechanism})"
    if any(ip in network for network in NOT_GLOBAL_V6):
        return "not globally routable"
    return _ip_reason(ip)


def resolve(raw: str, settings: Settings) -> Destination:
    """Check the URL and its address now; blocking (DNS), so call it off the event loop."""
    url = check_url(raw, settings)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # ValueError: a name the idna codec refuses
        raise DestinationRefused(f"cannot resolve {url.host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.webhook_allow_private:
        for address in addresses:
            reason = _refused_reason(address)
            if reason:
                raise DestinationRefused(f"{url.host} resolves to {address}: a {reason} "
                                         "address")
    return Destination(url=url.copy_with(host=addresses[0]), host=url.host,
                       netloc=url.netloc.decode())
