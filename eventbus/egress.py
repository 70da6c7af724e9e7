"""Where the platform's own processes may send what a tenant addresses: callbacks and webhooks.

A callback (`?callback=`, a batch's `callback`) or a subscription's webhook sink is sent by a
worker or the deliverer, from inside the platform's network. Left open, a tenant could aim it
at the machine's own services (a webhook with `method: PUT` at SeaweedFS's filer writes its
event into any bucket; nats-server's monitoring; a cloud's metadata service) or at other
machines of a private network.
So an address that is not global (loopback, private, link-local, shared, reserved, multicast,
unspecified) is refused unless the operator allows it (`DEEPFAAS_EGRESS_ALLOW`: CIDRs). A name
is resolved once, here, and the request goes to the address that passed (no second lookup
that DNS could answer differently); redirects are not followed. URLs are read as httpx reads
them, so what is checked is what it would connect to; an IPv6 address that embeds an IPv4 one
(NAT64, 6to4, IPv4-compatible) is judged by the IPv4 address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from eventbus.errors import ValidationFailedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING: Final = "DEEPFAAS_EGRESS_ALLOW"
#: names that are loopback wherever they are resolved (RFC 6761)
LOCAL_NAMES: Final = ("localhost", ".localhost")
#: IPv6 prefixes whose last 32 bits are an IPv4 address the packet reaches (NAT64, RFC 6052;
#: IPv4-compatible); the local-use NAT64 prefix (RFC 8215) is refused whole
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64: Final = ipaddress.ip_network("64:ff9b:1::/48")
COMPATIBLE: Final = ipaddress.ip_network("::/96")
#: a host of numbers only (decimal, octal or hex parts), which the resolver reads as IPv4
_NUMERIC: Final = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)(\.(0[xX][0-9A-Fa-f]*|[0-9]+)){0,3}")
#: one label of a host name (letters, digits, `_`, inner `-`; 1 to 63 of them)
_LABEL: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class EgressRefusedError(ValidationFailedError):
    """The platform will not send a request to this URL (its address is not allowed)."""


class UnresolvedHostError(OSError):
    """The URL's host did not resolve now (retryable: DNS may answer later)."""


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
    @functools.lru_cache(maxsize=16)  # read per request that carries a callback or a sink
    def parse(cls, text: str) -> EgressPolicy:
        """From ``DEEPFAAS_EGRESS_ALLOW``: comma-separated CIDRs or addresses (ValueError)."""
        return cls(parse_networks(text, SETTING))

    def refusal(self, address: IPAddress) -> str | None:
        """Why requests to ``address`` are refused, or None."""
        if any(address in network for network in self.allow):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if inner is not None:
                reason = self.refusal(inner)
                return None if reason is None else f"{address} embeds {reason}"
            if address in LOCAL_NAT64 or address.is_site_local:
                return f"{address} is private"
        if address.is_global and not address.is_multicast:
            return None
        return f"{address} is {_kind(address)}"

    def check_literal(self, url: str) -> None:
        """What can be known without DNS: an http(s) URL with a host, and, when that host is an
        address or a loopback name, an allowed one. EgressRefusedError says why not."""
        self._check_literal(_parse(url), url)

    def _check_literal(self, parsed: httpx.URL, url: str) -> None:
        host = parsed.host.rstrip(".")
        if host.endswith(LOCAL_NAMES) or host in LOCAL_NAMES:
            address: IPAddress = ipaddress.ip_address("127.0.0.1")
        else:
            found = _numeric(host)
            if found is None:
                return  # a name: resolved when the request is sent
            address = found
        reason = self.refusal(address)
        if reason is not None:
            raise _refused(url, reason)

    async def pin(self, url: str) -> Target:
        """Resolve ``url``'s host and pick an allowed address: EgressRefusedError if none is,
        UnresolvedHostError (an OSError: try again later) if the host does not resolve now."""
        parsed = _parse(url)
        self._check_literal(parsed, url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found: list[IPAddress] = [ipaddress.ip_address(parsed.host)]
        except ValueError:
            name = parsed.raw_host.decode("ascii")  # IDNA already
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    name, port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                raise UnresolvedHostError(f"{name!r} does not resolve now: {exc}") from exc
            except UnicodeError as exc:  # a name no resolver can take, stored before the check
                raise EgressRefusedError(f"{url!r} has no valid host name", url=url) from exc
            found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        reasons = []
        for candidate in found:
            reason = self.refusal(candidate)
            if reason is None:
                return _pinned(parsed, candidate)
            reasons.append(reason)
        raise _refused(url, "; ".join(dict.fromkeys(reasons)))


def parse_networks(text: str, setting: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs or addresses (a setting such as ``DEEPFAAS_EGRESS_ALLOW``);
    ValueError naming ``setting`` and the entry that is neither."""
    networks = []
    for item in text.replace(" ", "").split(","):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"{setting}: {item!r} is not a CIDR or address") from exc
    return tuple(networks)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise EgressRefusedError(f"{url!r} is not a valid URL: {exc}", url=url) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EgressRefusedError(f"{url!r} is not an http(s) URL with a host", url=url)
    try:
        ipaddress.ip_address(parsed.host)
    except ValueError:
        if not _is_host_name(parsed.raw_host.decode("ascii", "replace")):
            raise EgressRefusedError(f"{url!r} has no valid host name", url=url) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise EgressRefusedError(f"{url!r} has no valid port", url=url)
    return parsed


def _is_host_name(host: str) -> bool:
    """Whether DNS could answer for ``host``: labels of 1 to 63 characters, 253 in all (an
    empty label, as in ``0..0``, made the resolver raise instead of answering no)."""
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _numeric(host: str) -> IPAddress | None:
    """The address a host written as numbers stands for: an IP address, or an IPv4 address in
    one of the forms the resolver also reads as one (``127.1``, ``0x7f.1``, ``2130706433``,
    ``0177.0.0.1``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _pinned(parsed: httpx.URL, address: IPAddress) -> Target:
    headers = {"host": parsed.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = parsed.raw_host.decode("ascii")
        # httpx pools connections by address: one verified for another name at the same
        # address must not carry this request
        headers["connection"] = "close"
    return Target(str(parsed.copy_with(host=str(address))), headers, extensions)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


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
