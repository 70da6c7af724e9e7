"""Where the platform's own processes may send what a tenant addresses: callbacks and webhooks.

A callback (`?callback=`, a batch's `callback`) or a subscription's webhook sink is sent by a
worker or the deliverer, from inside the platform's network. Left open, a tenant could aim it
at the machine's own services (a webhook with `method: PUT` at SeaweedFS's filer writes its
event into any bucket; nats-server's monitoring; a cloud's metadata service) or at other
machines of a private network.
So an address that is not global (loopback, private, link-local, shared, reserved, multicast,
unspecified) is refused unless the operator allows it (`DEEPFAAS_EGRESS_ALLOW`: CIDRs). A name
is resolved once, here, and the request goes to the address that passed (no second lookup
that DNS could answer differently); redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from eventbus.errors import ValidationFailedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING: Final = "DEEPFAAS_EGRESS_ALLOW"
#: names that are loopback wherever they are resolved (RFC 6761)
LOCAL_NAMES: Final = ("localhost", ".localhost")


class EgressRefusedError(ValidationFailedError):
    """The platform will not send a request to this URL (its address is not allowed)."""


@dataclass(frozen=True)
class Target:
    """A checked URL, pinned to the address that passed: ``url`` names the address, and
    ``headers`` / ``extensions`` keep the original host for HTTP and TLS (httpx)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EgressPolicy:
    """Global addresses, plus the networks the operator allows."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """From ``DEEPFAAS_EGRESS_ALLOW``: comma-separated CIDRs or addresses (ValueError)."""
        networks = []
        for item in text.replace(" ", "").split(","):
            if item:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError as exc:
                    raise ValueError(f"{SETTING}: {item!r} is not a CIDR or address") from exc
        return cls(tuple(networks))

    def refusal(self, address: IPAddress) -> str | None:
        """Why requests to ``address`` are refused, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allow):
            return None
        if address.is_global and not address.is_multicast:
            return None
        return f"{address} is {_kind(address)}"

    def check_literal(self, url: str) -> None:
        """What can be known without DNS: an http(s) URL with a host, and, when that host is an
        address or a loopback name, an allowed one. EgressRefusedError says why not."""
        host = _host(url)
        if host.endswith(LOCAL_NAMES) or host in LOCAL_NAMES:
            address: IPAddress = ipaddress.ip_address("127.0.0.1")
        else:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return  # a name: resolved when the request is sent
        reason = self.refusal(address)
        if reason is not None:
            raise _refused(url, reason)

    async def pin(self, url: str) -> Target:
        """Resolve ``url``'s host and pick an allowed address (EgressRefusedError if none)."""
        self.check_literal(url)
        parts = urlsplit(url)
        host = _host(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address: IPAddress = ipaddress.ip_address(host)
            found = [address]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                raise _refused(url, f"{host!r} does not resolve ({exc})") from exc
            found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        reasons = []
        for candidate in found:
            reason = self.refusal(candidate)
            if reason is None:
                return _pinned(url, candidate)
            reasons.append(reason)
        raise _refused(url, "; ".join(dict.fromkeys(reasons)))


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port past 65535, or not a number, raises here
    except ValueError:
        valid = False
    if not valid or parts.hostname is None:
        raise EgressRefusedError(f"{url!r} is not an http(s) URL with a host", url=url)
    return parts.hostname.rstrip(".").lower()


def _pinned(url: str, address: IPAddress) -> Target:
    parts = urlsplit(url)
    shown = f"[{address}]" if address.version == 6 else str(address)
    netloc = shown if parts.port is None else f"{shown}:{parts.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    pinned = parts._replace(netloc=netloc).geturl()
    host = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return Target(pinned, {"host": host}, extensions)


def _kind(address: IPAddress) -> str:
    for test, name in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(address, test):
            return name
    return "not global"


def _refused(url: str, reason: str) -> EgressRefusedError:
    return EgressRefusedError(
        f"the platform does not send requests to {url!r}: {reason} (an operator can allow "
        f"networks with {SETTING}, e.g. 10.1.0.0/16)",
        url=url,
    )
