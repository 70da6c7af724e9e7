"""Which addresses the platform's processes send tenants' callbacks and webhooks to.

No server is needed: the policy is pure, and `pin` resolves names with the system resolver
(`localhost` from /etc/hosts). Sending through it is tested with real receivers in
tests/eventbus/test_delivery.py and tests/e2e/test_egress.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

import pytest

from eventbus.egress import EgressPolicy, EgressRefusedError, UnresolvedHostError
from eventbus.settings import BusSettings

DEFAULT = EgressPolicy()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8888/buckets/x/y", "loopback"),
        ("http://127.9.9.9/", "loopback"),
        ("http://[::1]:4222/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # an IPv4 address written as IPv6
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://100.64.0.1/", "not global"),  # carrier-grade NAT
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("https://[fd00::1]/", "private"),
        ("http://localhost:9000/", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://LOCALHOST./", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254 is link-local"),  # NAT64
        ("http://[2002:a9fe:a9fe::]/", "embeds 169.254.169.254"),  # 6to4
        ("http://[::7f00:1]/", "embeds 127.0.0.1 is loopback"),  # IPv4-compatible
        ("http://[64:ff9b:1::1]/", "private"),  # local-use NAT64
        ("http://[fec0::1]/", "private"),  # site-local
        # numbers the resolver reads as IPv4 addresses, as `inet_aton` does
        ("http://127.1/", "127.0.0.1 is loopback"),
        ("http://0x7f.1:4222/", "127.0.0.1 is loopback"),
        ("http://2130706433/", "127.0.0.1 is loopback"),
        ("http://0177.0.0.1./", "127.0.0.1 is loopback"),
        ("http://0xa9fea9fe/", "169.254.169.254 is link-local"),
        ("http://10.1/", "10.0.0.1 is private"),
    ],
)
def test_addresses_that_are_not_global_are_refused(url: str, why: str) -> None:
    with pytest.raises(EgressRefusedError, match=why) as refused:
        DEFAULT.check_literal(url)
    assert "DEEPFAAS_EGRESS_ALLOW" in str(refused.value)


def test_global_addresses_and_names_pass_the_literal_check() -> None:
    for url in (
        "http://8.8.8.8/",
        "https://[2001:4860:4860::8888]/x",
        "https://hooks.example.org/",
        "http://134744072/",  # 8.8.8.8 as one number
        "http://1e100.net/",  # a name that starts with a digit
        "http://0x.example/",
    ):
        DEFAULT.check_literal(url)  # a name is left to `pin`


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "http:///nohost",
        "file:///etc/passwd",
        "http://[",
        "http://a.org:99999/",
        "http://a%2eb.org/",
        "https://0..0",  # an empty label: the resolver raised on it (schemathesis found one)
        "http://a..example.org/",
        "http://.example.org/",
        f"http://{'a' * 64}.org/",  # a label past 63
        f"http://{'a.' * 127}org/",  # a name past 253
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(EgressRefusedError, match=r"URL|host|port"):
        DEFAULT.check_literal(url)


def test_the_operator_allows_networks() -> None:
    policy = EgressPolicy.parse("10.1.0.0/16, 127.0.0.1")
    policy.check_literal("http://10.1.200.3/hook")
    policy.check_literal("http://127.0.0.1:9/")
    with pytest.raises(EgressRefusedError, match=re.escape("10.2.0.1 is private")):
        policy.check_literal("http://10.2.0.1/")
    with pytest.raises(EgressRefusedError, match=re.escape("127.0.0.2 is loopback")):
        policy.check_literal("http://127.0.0.2/")
    assert policy.refusal(ipaddress.ip_address("::ffff:10.1.0.9")) is None


def test_a_bad_setting_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFAAS_EGRESS_ALLOW", "10.0.0.0/8,not-a-network")
    with pytest.raises(ValueError, match="not-a-network"):
        BusSettings()
    monkeypatch.setenv("DEEPFAAS_EGRESS_ALLOW", "10.0.0.0/8")
    assert BusSettings().egress().allow == (ipaddress.ip_network("10.0.0.0/8"),)


async def test_pin_sends_to_the_address_that_passed_and_keeps_the_host() -> None:
    policy = EgressPolicy.parse("127.0.0.1/32")
    target = await policy.pin("http://user:pw@localhost:8123/hook?x=1")
    assert target.url == "http://user:pw@127.0.0.1:8123/hook?x=1"
    assert target.headers == {"host": "localhost:8123"} and target.extensions == {}
    tls = await EgressPolicy.parse("::1/128").pin("https://[::1]/a")
    assert tls.url == "https://[::1]/a" and tls.extensions == {"sni_hostname": "::1"}


async def test_pin_resolves_names_and_refuses_what_they_resolve_to() -> None:
    with pytest.raises(EgressRefusedError, match=re.escape("127.0.0.1 is loopback")):
        await DEFAULT.pin("http://localhost:8123/")  # a name that is loopback wherever it is
    with pytest.raises(UnresolvedHostError, match="does not resolve"):  # retryable
        await DEFAULT.pin("http://no-such-host.invalid/")


async def test_a_name_goes_to_its_first_allowed_address_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DNS answer mixing the host's loopback and a public address (as a rebinding attacker
    would give) is sent to the public one; an answer of refused addresses only is refused. The
    answers stand in for a DNS server (none runs here); the choice is the code under test."""
    loop = asyncio.get_running_loop()
    answers = {
        "mixed.example": ["127.0.0.1", "::1", "93.184.216.34"],
        "inside.example": ["10.0.0.7", "169.254.169.254"],
    }

    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(0, 0, 0, "", (address, port)) for address in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    target = await DEFAULT.pin("https://mixed.example/hook")
    assert target.url == "https://93.184.216.34/hook"
    # no connection kept: the pool would hand it to another name at the same address
    assert target.headers == {"host": "mixed.example", "connection": "close"}
    assert target.extensions == {"sni_hostname": "mixed.example"}
    with pytest.raises(
        EgressRefusedError, match=re.escape("10.0.0.7 is private; 169.254.169.254 is link")
    ):
        await DEFAULT.pin("http://inside.example/")
