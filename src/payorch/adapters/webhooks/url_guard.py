"""Which webhook URLs may be called: no private, loopback, link-local or metadata
address in any spelling, checked on the address actually connected to.

A host is resolved once; every address it resolves to must be public, and the sender
connects to the first of them (no second lookup a DNS rebinding could answer
differently). Literal IPv4 addresses must be written as four decimal octets: decimal
(2130706433), hex (0x7f.0.0.1), octal (0177.0.0.1) or short (127.1) spellings are
refused outright. IPv6 forms that embed an IPv4 address (::ffff:a.b.c.d, 6to4, NAT64)
are judged by the IPv4 address inside.

Development only: with allow_http_loopback, http:// (or https://) to 127.0.0.1,
[::1] or localhost, written exactly so, is allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Resolve = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_SPELLINGS = frozenset({"127.0.0.1", "::1", "localhost"})
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class UrlRefused(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    url: str
    scheme: str
    # The host as written (ASCII): Host header and TLS name.
    host: str
    port: int
    # The address to connect to, checked.
    address: str


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _looks_numeric(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return all(_NUMERIC_LABEL.match(label) for label in labels)


def refusal(ip: IPAddress) -> str | None:
    """Why an address may not be called, or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or ip in _NAT64_LOCAL):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            return f"{ip} embeds {inner}" if inner else None
        if ip.teredo is not None:
            return f"{ip} is a Teredo tunnel address"
        # fec0::/10: deprecated, but still routed inside networks that kept it, and
        # neither private nor reserved to the ipaddress module.
        if ip.is_site_local:
            return f"{ip} is a site-local address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (cloud metadata lives there)"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return f"{ip} is not a unicast public address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


class UrlGuard:
    def __init__(
        self,
        *,
        allow_http_loopback: bool = False,
        resolve: Resolve = system_resolve,
        resolve_timeout_s: float = 5.0,
    ) -> None:
        self.allow_http_loopback = allow_http_loopback
        self._resolve = resolve
        self._resolve_timeout_s = resolve_timeout_s

    async def check(self, url: str) -> CheckedUrl:
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise UrlRefused("the URL contains whitespace or control characters")
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"not a valid URL: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise UrlRefused("the URL must start with https://")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials in the URL are not allowed")
        raw_host = parts.hostname or ""
        if not raw_host:
            raise UrlRefused("the URL has no host")
        dev_loopback = self.allow_http_loopback and raw_host in LOOPBACK_SPELLINGS
        if scheme == "http" and not dev_loopback:
            raise UrlRefused("the URL must use https")
        try:
            host = raw_host if raw_host.isascii() else raw_host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UrlRefused("the host name is not a valid domain name") from exc
        port = port or (443 if scheme == "https" else 80)
        literal: IPAddress | None
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None and _looks_numeric(host):
            raise UrlRefused(f"{host!r} is an IP address in a non-standard spelling")
        if literal is not None:
            addresses: list[str] = [str(literal)]
        else:
            try:
                addresses = await asyncio.wait_for(
                    self._resolve(host, port), timeout=self._resolve_timeout_s
                )
            except (OSError, TimeoutError, UnicodeError) as exc:
                raise UrlRefused(f"cannot resolve {host!r}") from exc
        if not addresses:
            raise UrlRefused(f"cannot resolve {host!r}")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if dev_loopback:
                if not ip.is_loopback:
                    raise UrlRefused(f"{host!r} resolves to {ip}, not a loopback address")
                continue
            why = refusal(ip)
            if why is not None:
                spelled = "" if literal is not None else f"{host!r} resolves to an address that "
                raise UrlRefused(
                    f"{spelled}{why}" if not spelled else f"{spelled}is refused: {why}"
                )
        return CheckedUrl(url, scheme, host, port, addresses[0].split("%", 1)[0])
